"""Output places checked before anything is written, and folders a failed command made removed.

Every command that writes a folder (a run, a pool, expert trajectories, an exported tree) checks
its output place first with `check_output_dir`, so that a file where a folder is needed or a place
that cannot be written (``/proc/x``, a read-only disk) is one clear error before any work starts,
and leaves nothing behind. Single files go through `fileio.atomic_write`, which reports the
same failures as `OutputPathError`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import UserError


class OutputPathError(UserError, OSError):
    """An output place cannot be used: a file where a folder is needed, or a folder that cannot be
    created or written. The message names the path and the reason."""


def missing_dirs(path: str | os.PathLike[str]) -> list[Path]:
    """``path`` and those of its ancestors that do not exist yet, deepest first: what creating
    ``path`` with ``mkdir(parents=True)`` would make."""
    path = Path(path)
    return [p for p in (path, *path.parents) if not p.exists() and not p.is_symlink()]


def remove_empty_dirs(dirs: list[Path]) -> None:
    """Remove ``dirs`` (deepest first) while they are empty; stops at the first that is not."""
    for d in dirs:
        try:
            d.rmdir()
        except OSError:
            return


def check_output_dir(path: str | os.PathLike[str], what: str = "output folder") -> None:
    """Raise `OutputPathError` unless ``path`` is, or can be created as, a folder this process can
    write into. Folders made to find out are removed again: nothing is left behind."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{what} {path} is a file, not a folder; choose another path")
    made = missing_dirs(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".datadistill-write-test.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputPathError(f"cannot write {what} {path}: {e.strerror or e}") from None
    finally:
        remove_empty_dirs(made)


def check_output_file(path: str | os.PathLike[str], what: str = "output file") -> None:
    """Raise `OutputPathError` unless a file can be written at ``path`` (its folder may not exist
    yet); nothing is left behind."""
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{what} {path} is a folder; give a file name")
    check_output_dir(path.parent, f"the folder of {what} {path}")
