"""Pinned CPU kernels: the same float results on any x86-64 processor.

A float32 training or generation on the CPU gives different bits on different processors because
the libraries pick their kernels by what the CPU offers, and each kernel sums in its own order:

- MKL (torch's BLAS here) dispatches by instruction set and cache size. Only its ``COMPATIBLE``
  branch (SSE2 without the approximate rcpps/rsqrtps) is documented to give the same results on
  Intel and non-Intel processors; ``MKL_CBWR=AVX2`` is honoured on Intel CPUs only and silently
  falls back to ``AUTO`` on AMD.
- ATen's vectorised kernels (reductions, softmax, norms) are compiled per capability (default,
  AVX2, AVX-512) and picked at run time; ``ATEN_CPU_CAPABILITY`` fixes the choice. bitsandbytes
  also reads it: it takes its native 4-bit kernels only where ATen reports AVX-512.
- oneDNN (bf16 matmuls, some fused ops) JIT-compiles for the best ISA it finds (AMX, AVX-512,
  AVX2); ``ONEDNN_MAX_CPU_ISA`` caps it. The fp32 path does not call it; the cap is a guard.
- Threads split reductions differently: one thread.

All of these are read once, when the libraries initialise, so they must be in the environment
before torch runs its first operation: :func:`pinned_env` gives a child process's environment.
The demo runs its tiny-model pipeline under them (``evalkit demo``); a real model on a GPU does
not need them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["PINNED_KERNELS", "pinned_env", "kernels_pinned"]

PINNED_KERNELS: dict[str, str] = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "MKL_CBWR": "COMPATIBLE",
    "ATEN_CPU_CAPABILITY": "default",
    "ONEDNN_MAX_CPU_ISA": "SSE41",
}


def pinned_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with every kernel choice pinned."""
    env = dict(os.environ if base is None else base)
    env.update(PINNED_KERNELS)
    return env


def kernels_pinned(env: Mapping[str, str] | None = None) -> bool:
    """Whether ``env`` (default: this process's) carries every pin of :data:`PINNED_KERNELS`."""
    env = os.environ if env is None else env
    return all(env.get(k) == v for k, v in PINNED_KERNELS.items())
