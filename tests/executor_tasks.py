"""Task functions for tests/test_executor.py: module-level, so that spawned and Ray workers import them."""

from __future__ import annotations

import os
import signal
from pathlib import Path


def square(x: int, log: str) -> bytes:
    """``x * x`` as the bytes of its result file; appends a line to ``log`` each time it runs."""
    with open(log, "a") as f:
        f.write(f"{x}\n")
    return str(x * x).encode()


def dies_once(x: int, marker: str) -> bytes:
    """Kills its own worker process the first time (as the OOM killer or a lost node would)."""
    m = Path(marker)
    if not m.exists():
        m.write_text("killed once")
        os.kill(os.getpid(), signal.SIGKILL)
    return str(x).encode()


def fails(x: int) -> bytes:
    raise ValueError(f"task {x} is broken")


def asks_badly(x: int) -> bytes:
    from datadistill.config import ConfigError

    raise ConfigError(f"task {x}: no such option")


def threads() -> int:
    import torch

    return torch.get_num_threads()
