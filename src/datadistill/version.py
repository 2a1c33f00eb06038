"""Which code made a result: the library's version, torch's, and the checkout's commit."""

from __future__ import annotations

import subprocess
from pathlib import Path

import torch

__version__ = "0.1.0"


def versions() -> dict[str, str]:
    """The versions stored with every distilled set and expert shard."""
    return {"datadistill": __version__, "torch": torch.__version__}


def git_commit() -> str:
    """The short commit hash of the checkout this package runs from, or ``unknown``."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
