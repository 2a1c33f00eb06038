"""Safe file writes. Whole files are atomic: readers never see a half-written file, and a failed
write leaves none (`atomic_write`). Append-only JSON-lines files (metrics, records, results) take one
whole line per ``write()``, flushed and fsynced under an exclusive lock of the file, and their readers
drop a line that a kill cut short with one warning (`append_jsonl`, `read_jsonl`)."""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

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


class TornLineWarning(UserWarning):
    """A JSON-lines file ended in a line that a kill cut short; the line was dropped."""


def append_jsonl(path: str | os.PathLike[str], row: dict[str, Any]) -> None:
    """Append ``row`` to the JSON-lines file ``path`` as one whole line: one ``write()``, flushed and
    fsynced, under an exclusive ``flock`` of the file, so that concurrent writers never interleave. A
    torn last line (a writer killed mid-line) is cut off first, with one warning, so that the new line
    starts a line of its own."""
    data = (json.dumps(row) + "\n").encode()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        end = os.lseek(fd, 0, os.SEEK_END)
        if end and os.pread(fd, 1, end - 1) != b"\n":
            keep = _last_line_end(fd, end)
            try:  # a whole line that only lacks its newline (a file edited by hand) is kept
                json.loads(os.pread(fd, end - keep, keep))
                data = b"\n" + data
            except ValueError:
                warnings.warn(f"{path}: dropped a torn last line ({end - keep} bytes) before appending",
                              TornLineWarning, stacklevel=2)
                os.ftruncate(fd, keep)
                os.lseek(fd, keep, os.SEEK_SET)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)  # closing releases the lock


def _last_line_end(fd: int, end: int) -> int:
    """The offset just past the last newline before ``end`` (0 when there is none)."""
    pos = end
    while pos > 0:
        start = max(0, pos - 65536)
        chunk = os.pread(fd, pos - start, start)
        i = chunk.rfind(b"\n")
        if i >= 0:
            return start + i + 1
        pos = start
    return 0


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of the JSON-lines file ``path`` (none when it does not exist). A last line that does
    not parse (a writer killed mid-line) is dropped with one warning; a bad line before the last is a
    `ValueError` naming the file and line."""
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == len(lines):
                warnings.warn(f"{path}:{i}: dropped a torn last line", TornLineWarning, stacklevel=2)
                break
            raise ValueError(f"{path}:{i}: not a JSON line ({e.msg}); the file is damaged") from None
    return rows
