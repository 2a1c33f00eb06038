"""A run's folder: made ready for a fresh, resumed or forced run (`prepare_run_dir`), held by one
process at a time (`run_dir_lock`), and removed again when a fresh run fails before it has
anything to resume (`discard_failed_run`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
from pathlib import Path


class RunDirError(FileExistsError):
    """The run directory exists and neither --resume nor --force was given (or another process holds it,
    or its checkpoint cannot be read)."""


def prepare_run_dir(out: Path, *, resume: bool, force: bool) -> tuple[bool, bool]:
    """Make ``out`` ready for the run; returns ``(fresh, made)``: whether the run starts from nothing
    (the folder was missing or empty, or ``force`` emptied it) and whether this call created it."""
    if out.exists() and any(out.iterdir()):
        if resume:
            return False, False
        if not force:
            raise RunDirError(f"run directory {out} already exists; pass --resume to continue it or --force to "
                              "overwrite it")
        shutil.rmtree(out)
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    return True, made


def discard_failed_run(out: Path, made: bool) -> None:
    """Remove what a fresh run wrote before it failed without a checkpoint (its ``config.yaml``,
    ``metrics.jsonl``), and the folder itself if the run created it, so that the next try starts
    anew instead of being asked to ``--resume`` a run that never got anywhere. A fresh run's folder
    held nothing of the user's when it started (it was missing, empty, or emptied by ``--force``)."""
    for p in out.iterdir():
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    if made:
        with contextlib.suppress(OSError):
            out.rmdir()


def _lock_path(out: Path) -> Path:
    return out.parent / f".{out.name}.lock"  # beside the folder: --force empties the folder itself


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


@contextlib.contextmanager
def run_dir_lock(out: Path):
    """Hold ``out`` for this process: a second run (resume or --force) of the same folder is refused
    while the first one's process lives, instead of both writing its checkpoint and files. A lock
    left by a process that died (killed, machine restarted) is taken over."""
    lock = _lock_path(out)
    lock.parent.mkdir(parents=True, exist_ok=True)
    me = f"{os.getpid()} {socket.gethostname()}"
    mine = lock.with_name(f"{lock.name}.{os.getpid()}")
    mine.write_text(me)  # complete before it appears under the lock's name (a hard link is atomic)
    try:
        held = _take(lock, mine, out)
    finally:
        mine.unlink(missing_ok=True)
    try:
        yield
    finally:
        try:
            if held and lock.read_text() == me:
                lock.unlink()
        except OSError:
            pass


def _take(lock: Path, mine: Path, out: Path) -> bool:
    """Link ``mine`` to ``lock``; False (run unlocked) where the file system has no hard links."""
    for _ in range(3):
        try:
            os.link(mine, lock)
            return True
        except FileExistsError:
            try:
                pid_text, _, host = lock.read_text().partition(" ")
                pid = int(pid_text)
            except FileNotFoundError:  # released meanwhile: try again
                continue
            except (OSError, ValueError):  # unreadable or not ours: treat as stale
                pid, host = -1, ""
            if pid > 0 and (host.strip() != socket.gethostname() or _pid_alive(pid)):
                raise RunDirError(f"run directory {out} is in use by process {pid} on {host.strip() or '?'} "
                                  f"(lock {lock}); wait for it to finish or stop it, or delete the lock if that "
                                  "process is gone") from None
            lock.unlink(missing_ok=True)  # stale: its process is gone
        except OSError:  # no hard links here (some network or FAT file systems)
            return False
    raise RunDirError(f"could not lock run directory {out} ({lock} keeps reappearing)")
