"""Atomic file writes: readers never see a half-written file, and a failed write leaves none."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

from .paths import OutputPathError


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp_path)`` then rename over ``path``: readers never see a half-written file."""
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"cannot write file {path}: it is a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:  # a file where a folder should be, a read-only or pseudo file system
        raise OutputPathError(f"cannot write {path}: {e.strerror or e}") from None
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text))


def safetensors_header(path: str | os.PathLike[str], key: str) -> str | None:
    """The string stored under ``key`` in a safetensors file's header metadata (None when absent), read
    without loading a tensor. OSError or ValueError (safetensors' own error becomes one) when the file
    cannot be read as safetensors."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get(key)
    except SafetensorError as e:
        raise ValueError(str(e)) from e
