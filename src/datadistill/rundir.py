"""A run's folder: made ready for a fresh, resumed or forced run (`prepare_run_dir`), held by one
process at a time (`run_dir_lock`, on `process_lock`), and removed again when a fresh run fails
before it has anything to resume (`discard_failed_run`)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
from pathlib import Path

from .errors import UserError


class RunDirError(UserError, FileExistsError):
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


class LockHeld(Exception):
    """``lock`` is held by a live process (``pid`` on ``host``, as its file names them)."""

    def __init__(self, lock: Path, pid: str, host: str):
        super().__init__(f"{lock} is held by process {pid} on {host}")
        self.lock, self.pid, self.host = lock, pid, host


@contextlib.contextmanager
def process_lock(lock: Path, *, wait: bool = False):
    """Hold the exclusive ``flock`` of the file ``lock`` for this process. Held elsewhere, it raises
    `LockHeld` at once, or with ``wait`` blocks until the holder lets go.

    The kernel releases an ``flock`` when its process dies however it dies, so a stale lock is never
    mistaken for a live one and two processes can never both take it. The file names the holder (pid
    and host) for the messages, and is removed while still held when the holder is done. On a file
    system without ``flock`` nothing is locked, as it would be without the lock file."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = _take(lock, wait)
    try:
        yield
    finally:
        if fd is not None:
            with contextlib.suppress(OSError):
                lock.unlink()  # while still held: a process waiting on this file retries on the new one
            os.close(fd)


@contextlib.contextmanager
def run_dir_lock(out: Path):
    """Hold ``out`` for this process: a second run (resume or --force) of the same folder is refused
    while the first one's process lives, instead of both writing its checkpoint and files. The lock is
    `process_lock` of ``.NAME.lock`` beside the folder."""
    lock = _lock_path(out)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(process_lock(lock))
        except LockHeld as e:
            raise RunDirError(f"run directory {out} is in use by process {e.pid} on {e.host} (lock {lock}); wait "
                              "for it to finish or stop it") from None
        yield


def _take(lock: Path, wait: bool) -> int | None:
    """An open descriptor of ``lock`` holding its exclusive flock (None: no flock on this file system)."""
    for _ in range(20):
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").split()
            os.close(fd)
            pid, host = (holder + ["?", "?"])[:2]
            raise LockHeld(lock, pid, host) from None
        except OSError:  # no flock here (some network file systems)
            os.close(fd)
            return None
        try:  # the file we locked must still be the lock's: its holder may have removed it meanwhile
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
            return fd
        os.close(fd)
    raise RunDirError(f"could not lock {lock} (it keeps being replaced)")
