"""How fast this machine is right now: a dense fp32 matmul, in GFLOPS.

Wall times of notebooks are only comparable between runs on machines of known
speed; the shared 2-core machines this project runs on have differed by 2x from
one session to the next. :func:`matmul_gflops` takes about a second and is
recorded around every notebook by :mod:`ran.pipeline`, next to its wall time.
"""

from __future__ import annotations

import platform
import time

import torch


def matmul_gflops(n: int = 2048, reps: int = 5, seed: int = 0) -> float:
    """Median GFLOPS of ``reps`` ``(n, n) @ (n, n)`` fp32 matmuls at torch's current
    thread count (one warm-up product first)."""
    if n < 64 or reps < 1:
        raise ValueError(f"need n >= 64 and reps >= 1, got n={n}, reps={reps}")
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=gen)
    b = torch.randn(n, n, generator=gen)
    a @ b  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    times.sort()
    return 2 * n**3 / times[len(times) // 2] / 1e9


def cpu() -> dict:
    """The CPU's model name and the vector instruction set torch's kernels use here (e.g.
    AVX2, AVX512): two machines with another set round differently, so a training run
    reproduces bit for bit on one machine, not across them."""
    name = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            name = next(
                (ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), ""
            )
    except OSError:
        pass
    return {
        "model": name or platform.processor(),
        "capability": torch.backends.cpu.get_cpu_capability(),
    }


def snapshot() -> dict:
    """The matmul speed and the thread count it was measured at, and the CPU (:func:`cpu`)."""
    return {"gflops": round(matmul_gflops(), 1), "threads": torch.get_num_threads(), "cpu": cpu()}
