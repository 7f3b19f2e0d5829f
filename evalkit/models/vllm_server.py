"""A vLLM OpenAI-compatible server that evalkit starts, watches and always stops.

``VLLMServer.start()`` runs ``PYTHON -m vllm.entrypoints.openai.api_server`` in its own process
group (so the engine's worker processes go with it), writes its log to a file, and waits until
``/health`` answers. ``stop()`` sends SIGTERM to the group, then SIGKILL after a grace period; it is
also registered with ``atexit`` and is safe to call twice. A server that exits during start-up, or
does not become ready in time, raises ``BackendUnavailable`` naming the log file.

Nothing here imports vllm: the server may live in another Python environment (``python:``).
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Sequence

from ..errors import BackendUnavailable

# Every server started by this process, stopped at interpreter exit even if close() was never called.
_LIVE: "weakref.WeakSet[VLLMServer]" = weakref.WeakSet()
_LIVE_LOCK = threading.Lock()


@atexit.register
def _stop_all() -> None:
    with _LIVE_LOCK:
        servers = list(_LIVE)
    for s in servers:
        s.stop()


_PREVIOUS_SIGTERM: Any = None


def _on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM skips atexit: stop our servers, then terminate as SIGTERM would have."""
    _stop_all()
    signal.signal(signal.SIGTERM, _PREVIOUS_SIGTERM if _PREVIOUS_SIGTERM is not None else signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _install_sigterm_handler() -> None:
    global _PREVIOUS_SIGTERM
    if threading.current_thread() is not threading.main_thread():
        return
    current = signal.getsignal(signal.SIGTERM)
    if current in (signal.SIG_DFL, None):  # never replace an application's own handler
        _PREVIOUS_SIGTERM = current
        signal.signal(signal.SIGTERM, _on_sigterm)


def _die_with_parent() -> None:  # runs in the child between fork and exec
    # Linux: the server gets SIGTERM when evalkit dies, even by SIGKILL, so it is never orphaned.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - not Linux: atexit and the SIGTERM handler still apply
        pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def default_log_dir() -> Path:
    """``$EVALKIT_CACHE/vllm-logs``, else ``$XDG_CACHE_HOME/evalkit/vllm-logs`` (``~/.cache``)."""
    if os.environ.get("EVALKIT_CACHE"):
        return Path(os.environ["EVALKIT_CACHE"]).expanduser() / "vllm-logs"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "evalkit" / "vllm-logs"


def _has_flag(args: Sequence[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in args)


@dataclass
class ServerCommand:
    """What to run. ``extra_args`` (the user's ``server_args``) win over evalkit's defaults."""

    model: str
    python: str = sys.executable
    lora_modules: dict[str, str] = field(default_factory=dict)  # name -> adapter dir
    enable_lora: bool = False
    max_lora_rank: int | None = None
    max_loras: int | None = None
    dtype: str | None = None
    gpu_memory_utilization: float | None = None
    tensor_parallel_size: int | None = None
    data_parallel_size: int | None = None
    extra_args: list[str] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 0

    def argv(self) -> list[str]:
        user = list(self.extra_args)
        argv = [self.python, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model]
        defaults: list[tuple[str, str | None]] = [
            ("--host", self.host),
            ("--port", str(self.port)),
            # Otherwise vLLM takes sampling defaults (e.g. repetition_penalty) from generation_config.json
            # and its outputs differ from the hf backend's for no visible reason.
            ("--generation-config", "vllm"),
        ]
        if self.dtype and self.dtype != "auto":
            defaults.append(("--dtype", self.dtype))
        if self.gpu_memory_utilization is not None:
            defaults.append(("--gpu-memory-utilization", str(self.gpu_memory_utilization)))
        if self.tensor_parallel_size:
            defaults.append(("--tensor-parallel-size", str(self.tensor_parallel_size)))
        if self.data_parallel_size:
            defaults.append(("--data-parallel-size", str(self.data_parallel_size)))
        if self.enable_lora or self.lora_modules:
            defaults.append(("--enable-lora", None))
            if self.max_lora_rank:
                defaults.append(("--max-lora-rank", str(self.max_lora_rank)))
            if self.max_loras:
                defaults.append(("--max-loras", str(self.max_loras)))
        for flag, value in defaults:
            if _has_flag(user, flag):
                continue
            argv.append(flag)
            if value is not None:
                argv.append(value)
        if self.lora_modules and not _has_flag(user, "--lora-modules"):
            argv.append("--lora-modules")
            argv.extend(f"{name}={path}" for name, path in self.lora_modules.items())
        return argv + user


def _tail(path: Path, n: int = 40) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    return lines[-n:]


def last_error_line(path: Path) -> str:
    """The most telling line of a server log: the last ``...Error: ...`` line, else the last line."""
    lines = [ln.strip() for ln in _tail(path, 200) if ln.strip()]
    for ln in reversed(lines):
        # skip the generic wrappers vLLM prints after the real cause
        if "Error" in ln and ":" in ln and "See root cause above" not in ln and "stack trace above" not in ln:
            return ln[-300:]
    return lines[-1][-300:] if lines else "(empty log)"


class VLLMServer:
    """One running ``vllm.entrypoints.openai.api_server`` process (group)."""

    def __init__(self, command: ServerCommand, log_path: Path, *, env: dict[str, str] | None = None, grace_s: float = 15.0):
        self.command = command
        self.grace_s = grace_s  # SIGTERM -> SIGKILL delay: vLLM needs a few seconds to free its workers
        self.log_path = Path(log_path)
        self.env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_fh: IO[bytes] | None = None
        self._stopped = False

    @property
    def url(self) -> str:
        return f"http://{self.command.host}:{self.command.port}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, *, timeout_s: float = 600.0, poll_s: float = 0.5) -> "VLLMServer":
        """Start the server and wait until ``/health`` answers 200. Stops it again on any failure."""
        import httpx

        if not self.command.port:
            self.command.port = free_port(self.command.host)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env}
        env.setdefault("VLLM_ALLOW_RUNTIME_LORA_UPDATING", "True")  # POST /v1/load_lora_adapter
        env.setdefault("VLLM_NO_USAGE_STATS", "1")
        env.setdefault("DO_NOT_TRACK", "1")
        env.setdefault("HF_HUB_OFFLINE", "1")
        argv = self.command.argv()
        log_fh = self._log_fh = open(self.log_path, "ab", buffering=0)
        log_fh.write(("$ " + " ".join(argv) + "\n").encode())
        try:
            self.proc = subprocess.Popen(
                argv, stdout=self._log_fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, start_new_session=True,  # own process group: stop() reaches the engine workers
                # only from the main thread: the death signal follows the *thread* that forked
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") and threading.current_thread() is threading.main_thread() else None,
            )
        except OSError as e:
            self._close_log()
            raise BackendUnavailable(f"cannot start the vLLM server with {argv[0]!r}: {e}; log: {self.log_path}") from None
        with _LIVE_LOCK:
            _LIVE.add(self)
        _install_sigterm_handler()
        deadline = time.monotonic() + timeout_s
        try:
            with httpx.Client(timeout=5.0) as client:
                while True:
                    code = self.proc.poll()
                    if code is not None:
                        raise BackendUnavailable(
                            f"the vLLM server exited with code {code} during start-up "
                            f"({last_error_line(self.log_path)}); log: {self.log_path}"
                        )
                    try:
                        if client.get(self.url + "/health").status_code == 200:
                            return self
                    except httpx.HTTPError:
                        pass
                    if time.monotonic() > deadline:
                        raise BackendUnavailable(
                            f"the vLLM server did not become ready within {timeout_s:.0f} s; log: {self.log_path}"
                        )
                    time.sleep(poll_s)
        except BaseException:  # start-up failed, timed out, or Ctrl-C: never leave it behind
            self.stop()
            raise

    def stop(self, grace_s: float | None = None) -> None:
        """SIGTERM to the whole process group, SIGKILL after ``grace_s``. Idempotent."""
        grace_s = self.grace_s if grace_s is None else grace_s
        if self._stopped:
            return
        self._stopped = True
        proc = self.proc
        if proc is not None:
            pgid = proc.pid  # start_new_session: the group id is the leader's pid
            _signal_group(pgid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
            # The leader may be gone while engine/worker children linger: kill what is left of the group.
            _signal_group(pgid, signal.SIGKILL)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            _wait_group_gone(pgid, timeout_s=5.0)
        self._close_log()
        with _LIVE_LOCK:
            _LIVE.discard(self)

    def _close_log(self) -> None:
        if self._log_fh is not None:
            try:
                self._log_fh.close()
            finally:
                self._log_fh = None

    def __enter__(self) -> "VLLMServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_group_gone(pgid: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.1)
