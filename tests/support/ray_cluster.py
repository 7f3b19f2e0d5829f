"""A real Ray cluster on loopback for tests and benchmarks: a head and worker nodes (``ray start``).

Ray resolves the host's own address for its internal traffic and probes 8.8.8.8 to find it, so
everything Ray runs here inside a fresh network namespace whose only interface is loopback
(``unshare -n``; ENVIRONMENT.md): :func:`run_in_netns` runs a command there. Inside it,
:class:`LocalCluster` starts the nodes with Ray's token authentication on (a random token passed in
the environment, as a real cluster would take it) and stops them.

Run as a script inside the namespace it plays the scenarios of tests/test_ray.py and prints one JSON
line: ``python -m tests.support.ray_cluster scenarios WORKDIR``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RAY = str(Path(sys.executable).parent / "ray")
EVALKIT = str(Path(sys.executable).parent / "evalkit")


def netns_available() -> str | None:
    """None when ``unshare -n`` works here, else why not (the reason a test skips with)."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "needs unshare and ip (util-linux, iproute2) to keep Ray's traffic on loopback"
    r = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    if r.returncode != 0:
        return f"cannot create a network namespace here (unshare -n: {r.stderr.strip() or r.returncode}); Ray tests need one"
    return None


def run_in_netns(argv: list[str], *, timeout: float, env: dict[str, str] | None = None, cwd: str | Path | None = None) -> subprocess.CompletedProcess:
    """Run ``argv`` in a new network namespace with loopback up; output captured."""
    script = "ip link set lo up && exec \"$@\""
    return subprocess.run(["unshare", "-n", "bash", "-c", script, "netns", *argv], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=cwd)


def ray_env(token: str | None = None) -> dict[str, str]:
    """The environment every Ray process of the test cluster shares (token auth, quiet core logs)."""
    env = dict(os.environ)
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token or secrets.token_hex(16), RAY_BACKEND_LOG_LEVEL="error",
               RAY_USAGE_STATS_ENABLED="0")
    return env


class LocalCluster:
    """A head node and ``workers`` more nodes on 127.0.0.1, ``cpus`` CPUs each (call inside a netns)."""

    def __init__(self, *, workers: int = 1, cpus: int = 1, port: int = 6391, env: dict[str, str] | None = None):
        self.port, self.workers, self.cpus = port, workers, cpus
        self.env = env or ray_env()
        self.temp = tempfile.mkdtemp(prefix="rk", dir="/tmp")  # short: Ray's socket paths have a length limit
        self.address = f"127.0.0.1:{port}"

    def _ray(self, *args: str) -> None:
        r = subprocess.run([RAY, *args], capture_output=True, text=True, env=self.env, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"ray {' '.join(args)} failed: {r.stderr[-2000:]}")

    def __enter__(self) -> "LocalCluster":
        common = [f"--num-cpus={self.cpus}", "--num-gpus=0", "--node-ip-address=127.0.0.1", "--disable-usage-stats", f"--temp-dir={self.temp}"]
        self._ray("start", "--head", f"--port={self.port}", "--include-dashboard=false", *common)
        for _ in range(self.workers):
            self._ray("start", f"--address={self.address}", *common)
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run([RAY, "stop", "--force"], capture_output=True, env=self.env, timeout=120)
        shutil.rmtree(self.temp, ignore_errors=True)


def write_adapter_eval(work: Path, base: Path, adapters: dict[str, Path], *, samples: int, max_new_tokens: int, batch_size: int) -> str:
    """A suite of ``samples`` prompts under ``work/suites/echo`` and the eval text that runs the tiny base and
    its adapters ``a`` and ``b`` on it (hf, one loaded base); callers add a ``ray:`` block or not.
    """
    suite = work / "suites" / "echo"
    suite.mkdir(parents=True)
    (suite / "suite.yaml").write_text("name: echo\nkind: regression\nscorers:\n  - {max_chars: 4000}\n")
    (suite / "samples.jsonl").write_text("".join(
        json.dumps({"id": f"q{i:04d}", "messages": [{"role": "user", "content": f"Item {i}: repeat w{i * 7 % 13} and w{i % 5}"}]}) + "\n"
        for i in range(samples)
    ))
    models = "".join(
        f"  {name}: {{backend: hf, path: '{base}'" + (f", adapter: '{adapters[name]}'" if name in adapters else "") + f", batch_size: {batch_size}}}\n"
        for name in ("base", "a", "b")
    )
    return f"models:\n{models}baseline: base\nsuites: [suites/echo]\ngeneration: {{max_new_tokens: {max_new_tokens}}}\n"


# ---------------------------------------------------------------- scenarios (tests/test_ray.py)


def _generations(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            return int(con.execute("SELECT COUNT(*) FROM generations").fetchone()[0])
    except sqlite3.Error:
        return 0


def _replica_pids() -> list[int]:
    import psutil

    pids = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info.get("cmdline") or [])
        if cmd.startswith("ray::EvalkitReplica"):
            pids.append(p.pid)
    return sorted(pids)


def _summary(out: Path) -> dict[str, Any] | None:
    f = out / "summary.json"
    return json.loads(f.read_text()) if f.exists() else None


def _run(work: Path, env: dict[str, str], *args: str, timeout: float = 600) -> dict[str, Any]:
    r = subprocess.run([EVALKIT, "run", "eval.yaml", "--no-progress", *args], cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
    return {"rc": r.returncode, "stderr": r.stderr[-3000:]}


def _kill_when(work: Path, env: dict[str, str], db: str, out: str, address: str, *, what: str) -> dict[str, Any]:
    """Start a run; once its first blocks are stored, SIGKILL a replica (``what='replica'``) or the driver."""
    proc = subprocess.Popen([EVALKIT, "run", "eval.yaml", "--no-progress", "--ray", address, "--store", db, "--out", out],
                            cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed: dict[str, Any] = {"killed": False}
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        n = _generations(work / db)
        if n > 0:
            if what == "replica":
                pids = _replica_pids()
                if pids:
                    os.kill(pids[0], signal.SIGKILL)
                    killed = {"killed": True, "stored_at_kill": n, "replicas_seen": len(pids)}
                    break
            else:
                os.kill(proc.pid, signal.SIGKILL)
                killed = {"killed": True, "stored_at_kill": n}
                break
        time.sleep(0.05)
    _, err = proc.communicate(timeout=600)
    killed.update(rc=proc.returncode, stderr=err[-3000:], stored_after=_generations(work / db))
    return killed


def scenarios(work: Path) -> dict[str, Any]:
    env = ray_env()
    res: dict[str, Any] = {"token": env["RAY_AUTH_TOKEN"]}
    with LocalCluster(workers=1, cpus=1, env=env) as cluster:
        a = cluster.address
        res["full"] = _run(work, env, "--ray", a, "--store", "full.db", "--out", "o_full")
        res["full"]["summary"] = _summary(work / "o_full")
        res["kill_replica"] = _kill_when(work, env, "kr.db", "o_kr", a, what="replica")
        res["kill_replica"]["summary"] = _summary(work / "o_kr")
        res["kill_driver"] = _kill_when(work, env, "kd.db", "o_kd", a, what="driver")
        res["kill_driver"]["rerun"] = _run(work, env, "--ray", a, "--store", "kd.db", "--out", "o_kd2")
        res["kill_driver"]["rerun"]["summary"] = _summary(work / "o_kd2")
        res["kill_driver"]["stored_final"] = _generations(work / "kd.db")
        # a replica range [1, 3] on a cluster with room for 2: starts with the first, the second joins, the third waits
        if (work / "range.yaml").exists():
            r = subprocess.run([EVALKIT, "run", "range.yaml", "--no-progress", "--ray", a, "--store", "range.db", "--out", "o_range"],
                               cwd=work, env=env, capture_output=True, text=True, timeout=600)
            res["range"] = {"rc": r.returncode, "stderr": r.stderr[-3000:], "summary": _summary(work / "o_range")}
        # a judge that is a local model runs on the cluster too
        if (work / "judge.yaml").exists():
            r = subprocess.run([EVALKIT, "run", "judge.yaml", "--no-progress", "--ray", a, "--store", "judge.db", "--out", "o_judge"],
                               cwd=work, env=env, capture_output=True, text=True, timeout=600)
            res["judge"] = {"rc": r.returncode, "stderr": r.stderr[-3000:], "summary": _summary(work / "o_judge")}
        # a replica that cannot load its model (weights truncated after the driver fingerprinted them)
        if (work / "bad.yaml").exists():
            r = subprocess.run([EVALKIT, "run", "bad.yaml", "--no-progress", "--ray", a, "--store", "bad.db", "--out", "o_bad"],
                               cwd=work, env=env, capture_output=True, text=True, timeout=600)
            res["bad_model"] = {"rc": r.returncode, "stderr": r.stderr, "out_exists": (work / "o_bad").exists()}
    # nothing listens here any more: one line, exit 2, nothing written
    r = subprocess.run([EVALKIT, "run", "eval.yaml", "--no-progress", "--ray", "127.0.0.1:6391", "--store", "none.db", "--out", "o_none"],
                       cwd=work, env=env, capture_output=True, text=True, timeout=120)
    res["unreachable"] = {"rc": r.returncode, "stderr": r.stderr, "out_exists": (work / "o_none").exists(),
                          "stored": _generations(work / "none.db")}
    return res


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "scenarios":
        print(json.dumps(scenarios(Path(sys.argv[2]))))
    else:
        sys.exit("usage: python -m tests.support.ray_cluster scenarios WORKDIR")
