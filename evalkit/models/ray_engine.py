"""Generation on a Ray cluster: a pool of replicas, each one evalkit backend loaded once.

The run stage plans as always (only the (model, sample) keys missing from the store), cuts the work
into the same blocks a local run generates, and hands them to :class:`RayEngine`. Each replica is a
Ray actor that opens one backend for a group of specs sharing a base (``open_backend``: one base,
every adapter on it: peft multi-adapter for hf, LoRA requests for offline vLLM), so K candidates on
one base cost one load per replica. Blocks stream back to the driver as they finish and the driver
commits each to the store: a driver killed mid-run loses only the blocks in flight, and a replica
whose process dies is restarted by Ray (``max_restarts``) and its block retried (``retries``).

A replica receives the same blocks, in the same composition, as the local backend would, and its
backend batches them the same way, so greedy outputs equal a local run's and the store's cache keys
are shared between a laptop and the cluster.

What runs here: ``hf`` and ``vllm`` with ``mode: offline`` (local weights, in-process). vLLM servers
(``serve``/``url``) and API models stay on the driver; judges that are local models run here too
(``open_backend`` consults the active engine).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

from ..errors import BackendUnavailable, UserError, missing_extra
from ..types import Completion, ModelSpec
from .base import GenerationRequest, ProgressFn

_ACTIVE: contextvars.ContextVar["RayEngine | None"] = contextvars.ContextVar("evalkit_ray_engine", default=None)


def active_engine() -> "RayEngine | None":
    """The engine generation goes through in this context (None: in this process)."""
    return _ACTIVE.get()


@contextlib.contextmanager
def using(engine: "RayEngine | None") -> Iterator[None]:
    """Route local-weight generation (candidates and local judges) through ``engine`` inside the block."""
    token = _ACTIVE.set(engine)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def runs_on_cluster(spec: ModelSpec) -> bool:
    """Whether a spec's generation goes to the cluster: in-process local weights (hf, offline vLLM)."""
    if spec.backend == "hf":
        return True
    if spec.backend == "vllm":
        opts = dict(spec.options)
        return opts.get("mode") == "offline"
    return False


def display_address(address: str) -> str:
    """The address as summaries and messages show it: no credentials."""
    from .._util.text import redact_url

    return redact_url(address) if "://" in address else address


class EvalkitReplica:
    """One replica (a Ray actor): one backend for one group of specs, opened once, alive until the
    pool kills it (its process goes with it, and the loaded model).

    A load failure is kept and reported by :meth:`ready` (raising in ``__init__`` would make Ray
    restart the actor in a loop).
    """

    def __init__(self, specs: Sequence[ModelSpec], threads: int) -> None:
        self.error: str | None = None
        self.backend: Any = None
        _normal_priority()
        if threads > 0:
            try:
                import torch

                torch.set_num_threads(threads)
            except ImportError:  # pragma: no cover - a backend without torch
                pass
        try:
            from .registry import backend_info

            self.backend = backend_info(specs[0].backend).factory(specs)  # in this worker's process
        except UserError as e:
            self.error = e.one_line()
        except Exception as e:  # noqa: BLE001 - any load failure is reported, with its cause
            self.error = f"{type(e).__name__}: {e}"

    def ready(self) -> dict[str, Any]:
        node = ""
        with contextlib.suppress(Exception):
            import ray

            node = ray.get_runtime_context().get_node_id()[:12]
        return {"error": self.error, "pid": os.getpid(), "host": socket.gethostname(), "node": node}

    def generate(self, requests: Sequence[GenerationRequest]) -> dict[str, Any]:
        if self.backend is None:
            raise BackendUnavailable(self.error or "the replica has no backend")
        _normal_priority()  # niceness is per thread on Linux: the one that computes, too
        t0 = time.perf_counter()
        outs = self.backend.generate(requests)
        return {"outs": outs, "pid": os.getpid(), "seconds": time.perf_counter() - t0}


def _normal_priority() -> None:
    """Ray starts workers at niceness 15 (``RAY_worker_niceness``), below every other process of a shared
    machine; a replica is the run's main work: back to normal priority where the system allows it.
    """
    with contextlib.suppress(OSError):
        if os.nice(0) > 0:
            os.nice(-os.nice(0))


@dataclass
class ReplicaStats:
    """What one replica did in this run (the summary's ``engine.per_replica``)."""

    replica: int
    host: str = ""
    node: str = ""  # the Ray node id (first 12 characters)
    items: int = 0
    blocks: int = 0
    busy_s: float = 0.0
    pids: list[int] = field(default_factory=list)

    def as_dict(self, wall_s: float) -> dict[str, Any]:
        return {
            "replica": self.replica, "host": self.host, "node": self.node, "items": self.items, "blocks": self.blocks,
            "busy_s": round(self.busy_s, 3), "items_per_s": round(self.items / wall_s, 3) if wall_s > 0 else None,
            "restarts": max(0, len(self.pids) - 1),
        }


class RayEngine:
    """Connects to (or starts) a Ray cluster on first use and runs blocks of requests on replicas.

    ``options`` is eval.yaml's ``ray:`` block (:class:`evalkit.config.RayOptions`).
    """

    def __init__(self, options: Any) -> None:
        self.options = options
        self.address: str = options.address
        self._ray: Any = None
        self.per_group: list[dict[str, Any]] = []  # one entry per group of specs run here
        self.items = 0
        self.wall_s = 0.0

    # ---------------------------------------------------------------- connection

    def connect(self) -> Any:
        if self._ray is not None:
            return self._ray
        try:
            import ray
        except ImportError as e:
            raise missing_extra("--ray (generation on a Ray cluster)", "ray", e) from None
        import logging

        address = self.address
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "error")  # Ray's core logs its warnings to stderr otherwise
        if address == "local":
            os.environ.setdefault("RAY_worker_niceness", "0")  # the cluster started here runs replicas at normal priority
        shown = display_address(address)
        kwargs: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False, "include_dashboard": False}
        if address == "local":
            _, hi = self.options.replica_range()
            kwargs.update(num_cpus=max(int(os.cpu_count() or 1), int(hi * self.options.num_cpus + 0.999)), _node_ip_address="127.0.0.1")
            target = None
        elif address == "auto" or address.startswith("ray://"):
            target = address
            if address.startswith("ray://"):
                kwargs.pop("include_dashboard")
        else:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                raise UserError(f"--ray: '{shown}' is not an address: use local, auto, HOST:PORT or ray://HOST:PORT", where="ray.address")
            try:
                socket.create_connection((host, int(port)), timeout=5).close()
            except OSError as e:
                raise BackendUnavailable(f"no Ray cluster answers at {shown} ({e.strerror or e}); start one with `ray start --head` or use --ray local",
                                         where="ray.address") from None
            target = address
        try:
            with _quiet_stderr():
                if target is None:
                    ray.init(**kwargs)
                else:
                    ray.init(address=target, **kwargs)
        except Exception as e:  # noqa: BLE001 - ConnectionError, RuntimeError, grpc errors: all "cannot reach"
            msg = " ".join(str(e).split())[:300]
            if "auth" in msg.lower() and "token" in msg.lower():
                msg = ("the cluster asks for Ray's token authentication: set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN "
                       "(or the token file ~/.ray/auth_token) as on the cluster's nodes")
            raise BackendUnavailable(f"cannot connect to the Ray cluster at {shown}: {type(e).__name__}: {msg}", where="ray.address") from None
        self._ray = ray
        return ray

    def close(self) -> None:
        if self._ray is not None:
            with contextlib.suppress(Exception):
                self._ray.shutdown()
            self._ray = None

    # ---------------------------------------------------------------- replicas

    def pool(self, specs: Sequence[ModelSpec]) -> "ReplicaPool":
        """Start replicas for one group of specs (one base and its adapters); close it when done."""
        return ReplicaPool(self, specs)

    def record(self, pool: "ReplicaPool") -> None:
        n = sum(s.items for s in pool.stats)
        if not n and not pool.wall_s:
            return
        self.wall_s += pool.wall_s
        self.items += n
        self.per_group.append({
            "models": [s.name for s in pool.specs], "startup_s": round(pool.startup_s, 3), "wall_s": round(pool.wall_s, 3), "items": n,
            "per_replica": [s.as_dict(pool.wall_s) for s in pool.stats],
        })

    # ---------------------------------------------------------------- record

    def summary(self) -> dict[str, Any]:
        """The summary's ``engine`` entry: where generation ran and how fast (no credentials)."""
        o = self.options
        lo, hi = o.replica_range()
        return {
            "kind": "ray", "address": display_address(self.address), "replicas": lo if lo == hi else [lo, hi],
            "num_cpus": o.num_cpus, "num_gpus": o.num_gpus, "items": self.items, "wall_s": round(self.wall_s, 3),
            "items_per_s": round(self.items / self.wall_s, 3) if self.wall_s > 0 else None, "groups": self.per_group,
        }


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Hold back what Ray's C++ core writes to fd 2 while connecting (address look-up warnings logged
    before its log level applies): a failure is reported in one line of ours instead.
    """
    import sys
    import tempfile

    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (captured): nothing to hold back
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), fd)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)


def _actor_dead(e: BaseException) -> bool:
    try:
        from ray.exceptions import RayActorError
    except ImportError:  # pragma: no cover
        return False
    return isinstance(e, RayActorError)



class ReplicaPool:
    """Replicas for one group of specs (one base): started by :meth:`RayEngine.pool`, stopped by ``close``."""

    def __init__(self, engine: RayEngine, specs: Sequence[ModelSpec]) -> None:
        ray = engine.connect()
        o = engine.options
        self.engine, self.specs, self.ray, self.options = engine, list(specs), ray, o
        lo, hi = o.replica_range()
        threads = max(1, int(o.num_cpus))
        actor_cls = ray.remote(num_cpus=o.num_cpus, num_gpus=o.num_gpus, max_restarts=o.max_restarts, max_task_retries=o.retries)(EvalkitReplica)
        self.handles = [actor_cls.remote(self.specs, threads) for _ in range(hi)]
        self.live = [False] * hi
        self.stats = [ReplicaStats(i) for i in range(hi)]
        self.wall_s = 0.0
        self.startup_s = 0.0
        self._closed = False
        self._starting: dict[Any, int] = {h.ready.remote(): i for i, h in enumerate(self.handles)}
        t0 = time.monotonic()
        deadline = t0 + o.start_timeout_s
        label = ", ".join(s.name for s in specs)
        try:
            while sum(self.live) < lo:
                left = deadline - time.monotonic()
                if left <= 0 or not self._starting:
                    raise BackendUnavailable(f"only {sum(self.live)} of {lo} Ray replica(s) for [{label}] started within {o.start_timeout_s:g} s "
                                             f"(each asks for num_cpus={o.num_cpus:g}, num_gpus={o.num_gpus:g}: does the cluster have them?)",
                                             where="ray.replicas")
                done, _ = ray.wait(list(self._starting), num_returns=1, timeout=min(left, 5.0))
                for ref in done:
                    err = self._joined(ref)
                    if err:
                        raise BackendUnavailable(f"a Ray replica could not load [{label}]: {err}", where="ray")
        except BaseException:
            self.close()
            raise
        self.startup_s = time.monotonic() - t0  # until the first min replicas had loaded the model

    def _joined(self, ref: Any) -> str | None:
        """A replica's ready() answered: mark it live, or return its load error."""
        i = self._starting.pop(ref)
        try:
            info = self.ray.get(ref)
        except Exception as e:  # noqa: BLE001 - the replica died while loading
            info = {"error": f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"}
        if info.get("error"):
            return str(info["error"])
        self.live[i] = True
        self.stats[i].host = str(info.get("host", ""))
        self.stats[i].node = str(info.get("node", ""))
        self.stats[i].pids.append(int(info.get("pid", 0)))
        return None

    def run(self, blocks: Sequence[Sequence[GenerationRequest]], progress: ProgressFn | None = None) -> Iterator[tuple[int, list[Completion]]]:
        """Yield ``(block index, completions)`` as replicas finish blocks (in any order).

        Every block is yielded exactly once, or the iterator raises: a block whose replica died is
        retried up to ``retries`` times (Ray restarts the replica itself up to ``max_restarts``).
        """
        ray, retries = self.ray, self.options.retries
        t0 = time.perf_counter()
        depth = 2  # blocks queued per replica: the next one is there when one finishes
        todo: deque[tuple[int, int]] = deque((i, 0) for i in range(len(blocks)))  # (block, failed attempts)
        inflight: dict[Any, tuple[int, int, int]] = {}  # ref -> (replica, block, attempts)
        load = [0] * len(self.handles)
        try:
            while todo or inflight:
                if self._starting:  # replicas of a range that came up since (an autoscaling cluster grew)
                    done, _ = ray.wait(list(self._starting), num_returns=len(self._starting), timeout=0)
                    for ref in done:
                        self._joined(ref)
                for i, h in enumerate(self.handles):
                    while todo and self.live[i] and load[i] < depth:
                        b, attempts = todo.popleft()
                        inflight[h.generate.remote(list(blocks[b]))] = (i, b, attempts)
                        load[i] += 1
                if not inflight:
                    raise BackendUnavailable("every Ray replica died; the blocks generated so far are stored, rerun to resume", where="ray")
                done, _ = ray.wait(list(inflight), num_returns=1, timeout=30.0)
                for ref in done:
                    i, b, attempts = inflight.pop(ref)
                    load[i] -= 1
                    try:
                        res = ray.get(ref)
                    except Exception as e:  # noqa: BLE001 - the replica died past its restarts, or the block raised
                        if _actor_dead(e):
                            self.live[i] = False
                        if attempts >= retries:
                            raise BackendUnavailable(f"a block of {len(blocks[b])} request(s) failed {attempts + 1} time(s) on the Ray cluster: "
                                                     f"{type(e).__name__}: {' '.join(str(e).split())[:300]}; generated blocks are stored, "
                                                     "rerun to resume", where="ray") from None
                        todo.appendleft((b, attempts + 1))
                        continue
                    outs = res["outs"]
                    st = self.stats[i]
                    if not st.pids or st.pids[-1] != res["pid"]:
                        st.pids.append(int(res["pid"]))  # Ray restarted this replica
                    st.items += len(outs)
                    st.blocks += 1
                    st.busy_s += float(res["seconds"])
                    if progress:
                        progress(len(outs))
                    yield b, outs
        finally:
            self.wall_s += time.perf_counter() - t0

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for h in self.handles:
            with contextlib.suppress(Exception):
                self.ray.kill(h)
        self.engine.record(self)


class RayBackend:
    """The Backend protocol over a replica pool, for callers that generate lists (local judges).

    The replicas load the model once, on the first ``generate``, and serve every later call.
    """

    def __init__(self, engine: RayEngine, specs: Sequence[ModelSpec], block: Callable[[ModelSpec], int]) -> None:
        self.engine = engine
        self.specs = list(specs)
        self.block = block
        self._pool: ReplicaPool | None = None

    def generate(self, requests: Sequence[GenerationRequest], progress: ProgressFn | None = None) -> list[Completion]:
        if self._pool is None:
            self._pool = self.engine.pool(self.specs)
        step = max(1, self.block(self.specs[0]))
        blocks = [list(requests[i : i + step]) for i in range(0, len(requests), step)]
        out: list[Completion | None] = [None] * len(requests)
        for b, outs in self._pool.run(blocks, progress):
            for j, c in enumerate(outs):
                out[b * step + j] = c
        return [c for c in out if c is not None]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
