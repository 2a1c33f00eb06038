"""What every speed benchmark shares: the machine's fp32 matrix-multiply rate (the floor's
denominator, measured in the same run), the CPU capability that PyTorch dispatches to, a timer that
keeps the fastest of several runs, and the record writer (`benchmarks/results/speed.jsonl`).

Force another capability for a whole run with the environment, e.g. the AVX2 path on an AVX-512
machine: ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "speed.jsonl"
CAPABILITY_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def matmul_gflops(n: int = 2048, reps: int = 5) -> float:
    """fp32 ``n x n`` matrix multiply rate, best of three rounds of ``reps`` products."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 * reps / best / 1e9


def capability() -> str:
    """The CPU capability ATen dispatches to (``AVX512``, ``AVX2``, ``DEFAULT`` ...)."""
    return torch.backends.cpu.get_cpu_capability()


def timed(fn: Callable[[], object], repeat: int, warmup: bool = True) -> float:
    """Seconds of the fastest of ``repeat`` calls (after one warm-up call): the least disturbed run."""
    return timed_peak(fn, repeat, warmup)[0]


def _status_mb(field: str) -> float | None:
    """A memory field of /proc/self/status in MiB; None where /proc is not Linux's."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def reset_peak_rss() -> float | None:
    """Start the peak resident memory over from the current one (Linux: ``5`` to /proc/self/clear_refs);
    returns the current resident memory (MiB), what the process holds before the measured calls."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _status_mb("VmRSS")


def memory(before: float | None) -> dict[str, float | None]:
    """The record's memory fields: the peak resident memory (MiB) since `reset_peak_rss` and what the
    process held when it was reset (the loaded dataset, torch's libraries)."""
    return {"peak_rss_mb": _status_mb("VmHWM"), "rss_before_mb": before}


def timed_peak(fn: Callable[[], object], repeat: int, warmup: bool = True) -> tuple[float, dict]:
    """`timed`, and the `memory` fields of the timed calls."""
    if warmup:
        fn()
    before = reset_peak_rss()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best, memory(before)


def write_record(rec: dict, commit: str, device: str) -> None:
    rec.update(capability=capability(), threads=torch.get_num_threads(), device=device, commit=commit,
               env={k: os.environ[k] for k in CAPABILITY_ENV if k in os.environ},
               command="python " + " ".join(sys.argv))
    from datadistill.fileio import append_jsonl  # one whole locked line per record (fileio)

    append_jsonl(RESULTS, rec)
    print(json.dumps(rec), flush=True)
