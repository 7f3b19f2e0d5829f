"""Pinned CPU kernels (evalkit._util.repro): a base built by the demo recipe and a QLoRA adapter trained
on it come out as the same bytes whatever kernels the caller's environment or processor would pick,
which is what makes the demo's figures the same on every x86-64 machine.

- The job twice from scratch, pinned, once under the caller's widest kernels (AVX-512 where this CPU
  has it, two threads, MKL's own dispatch) and once under AVX2 and one thread: byte-identical base
  and adapter. Unpinned, the same two settings train different adapters on a CPU with AVX-512 (shown,
  so the test is not vacuous there).
- Under ``qemu-x86_64 -cpu EPYC-Rome`` (an emulated AMD processor with AVX2 and no AVX-512: MKL takes
  its non-Intel path, ATen and bitsandbytes see AVX2), the pinned job gives the same bytes as on this
  machine's own CPU. Slow (emulation, minutes); needs Debian's qemu-user, which scripts/install.sh
  installs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from evalkit._util.repro import PINNED_KERNELS, pinned_env

REPO = Path(__file__).resolve().parents[2]


def _job(out: Path, env: dict[str, str], *, steps: int = 4, prefix: list[str] | None = None, timeout: int = 300) -> dict[str, str]:
    cmd = [*(prefix or []), sys.executable, "-m", "tests.train.pinned_job", str(out), str(steps)]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _outer(**kv: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in PINNED_KERNELS}
    return {**env, **kv}


def _widest_capability() -> str:
    import torch

    return "avx512" if torch.backends.cpu.get_cpu_capability() == "AVX512" else "avx2"


def test_pinned_build_and_training_are_byte_identical_whatever_the_callers_kernels(tmp_path):
    wide = _outer(ATEN_CPU_CAPABILITY=_widest_capability(), OMP_NUM_THREADS="2", MKL_CBWR="AUTO")
    narrow = _outer(ATEN_CPU_CAPABILITY="avx2", OMP_NUM_THREADS="1")
    one, two = (_job(tmp_path / f"pinned-{i}", pinned_env(env)) for i, env in enumerate((wide, narrow)))
    assert one == two, "pinned kernels built or trained different weights"
    if _widest_capability() == "avx512":  # this CPU offers other kernels: unpinned, they change the bits
        native = [_job(tmp_path / f"native-{i}", env) for i, env in enumerate((wide, narrow))]
        assert native[0]["adapter"] != native[1]["adapter"]


@pytest.mark.slow
def test_pinned_job_gives_the_same_bytes_on_an_emulated_amd_avx2_cpu(tmp_path):
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        pytest.skip("qemu-x86_64 (Debian's qemu-user) is not installed: scripts/install.sh installs it")
    here = _job(tmp_path / "here", pinned_env(), steps=2)
    amd = _job(tmp_path / "amd", pinned_env(), steps=2, prefix=[qemu, "-cpu", "EPYC-Rome"], timeout=1800)
    assert amd == here
