"""Run independent tasks one after another, in a local process pool, or on a Ray cluster.

The work that dominates distillation at the papers' budgets is embarrassingly parallel: expert
trajectories (one task per expert), evaluations (one per model and architecture), benchmark jobs
and hyper-parameter trials. Each is a `Task`: a module-level function and its arguments. A task
with an ``out`` file returns that file's bytes; the driver writes them atomically under the
deterministic name, and a task whose file exists is never run again, so a grid resumes after any
failure and two launches of one grid never clash (the second finds the files, or writes the same
bytes under the same name). Workers therefore need no shared file system for their results.

Backends (`make_executor`):

- ``serial`` (default): in this process, one task after another.
- ``process``: a local pool of ``workers`` spawned processes; a worker that dies (killed, out of
  memory) is replaced and its task run again, up to ``max_retries`` times.
- ``ray``: tasks on a Ray cluster (``address="auto"`` or ``host:port`` of a running one, else a
  local cluster started for the grid); Ray retries a task whose worker died.

Every task runs with ``threads`` torch threads (`torch.set_num_threads`), whichever the backend.
The thread count changes how floating-point reductions are split, so results are bit-identical
across backends at equal ``threads``: that, not the backend, is what to keep fixed.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing
import os
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from tqdm.auto import tqdm

from .config import ConfigError
from .errors import UserError
from .fileio import atomic_write

BACKENDS = ("serial", "process", "ray")


class ExecutorError(ConfigError):
    """The executor cannot start (bad backend, unreachable cluster), or some tasks failed on errors about
    what the user asked for (`errors.UserError`): one line."""


class TaskError(RuntimeError):
    """Some tasks failed on a bug (an exception that is not a `errors.UserError`): the message holds the
    first one's traceback as the worker printed it, so the command shows it once and exits 1."""


@dataclass(frozen=True)
class Task:
    """``fn(*args, **kwargs)``, named ``key`` in progress and errors. With ``out``, ``fn`` returns the
    bytes of that file, which the driver writes atomically; the task is skipped when it exists."""

    key: str
    fn: Callable[..., Any]
    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    out: Path | None = None

    def done(self) -> bool:
        return self.out is not None and Path(self.out).is_file()


def call(task: Task, threads: int | None) -> Any:
    """Run ``task`` here with ``threads`` torch threads (restored afterwards)."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return task.fn(*task.args, **task.kwargs)
    except Exception as e:
        # the worker's own traceback travels with the exception (its __dict__ is pickled with it), so a
        # bug in a task shows where it happened whichever backend ran it
        e.task_traceback = "".join(traceback.format_exception(e))  # type: ignore[attr-defined]
        raise
    finally:
        torch.set_num_threads(before)


class Executor:
    """Runs a list of tasks; `run` returns ``{key: result}`` (for a task with ``out``: its path)."""

    name = "serial"

    def __init__(self, *, workers: int | None = None, threads: int | None = None, device: str = "cpu",
                 max_retries: int = 3, progress: bool = True) -> None:
        self.workers = workers or 1
        self.threads = threads
        self.device = device
        self.max_retries = max_retries
        self.progress = progress

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        pass

    def run(self, tasks: Sequence[Task], desc: str = "tasks",
            on_done: Callable[[Task, Any], None] | None = None) -> dict[str, Any]:
        """Run the tasks not yet done; ``on_done(task, result)`` is called in this process as each one
        finishes (e.g. to append its record at once). `ExecutorError` at the end when some failed."""
        keys = [t.key for t in tasks]
        if len(set(keys)) != len(keys):
            dup = sorted({k for k in keys if keys.count(k) > 1})
            raise ExecutorError(f"task keys must be unique; repeated: {', '.join(dup[:5])}")
        results: dict[str, Any] = {t.key: Path(t.out) for t in tasks if t.done()}
        todo = [t for t in tasks if t.key not in results]
        failed: dict[str, BaseException] = {}
        bar = tqdm(total=len(tasks), initial=len(results), desc=f"{desc} ({self.name})", disable=not self.progress)

        def finish(task: Task, value: Any) -> None:
            results[task.key] = _store(task, value)
            if task.out is not None:
                _error_file(task).unlink(missing_ok=True)
            bar.update()
            if on_done is not None:
                on_done(task, results[task.key])

        def fail(task: Task, error: BaseException) -> None:
            failed[task.key] = error
            if task.out is not None:  # the task's result file records the failure until it succeeds
                atomic_write(_error_file(task), lambda p: p.write_text(json.dumps(_failure(task, error), indent=1)))
            bar.update()

        try:
            if todo:
                self._run(todo, finish, fail)
        finally:
            bar.close()
        if failed:
            _raise_failures(failed, len(tasks), desc)
        return {t.key: results[t.key] for t in tasks}

    def _run(self, todo: list[Task], finish: Callable, fail: Callable) -> None:
        for task in todo:
            if task.done():  # finished meanwhile by another launch
                finish(task, None)
                continue
            try:
                value = call(task, self.threads)
            except Exception as e:  # noqa: BLE001 (a task's error is reported with its key; the others go on)
                fail(task, e)
            else:
                finish(task, value)


def _failure(task: Task, error: BaseException) -> dict[str, Any]:
    return {"key": task.key, "type": type(error).__name__, "error": str(error),
            "user_error": isinstance(error, UserError), "traceback": _traceback(error)}


def _traceback(error: BaseException) -> str:
    return getattr(error, "task_traceback", None) or "".join(traceback.format_exception(error))


def _error_file(task: Task) -> Path:
    """Where a failed task with an ``out`` file records its error (removed when it succeeds)."""
    return Path(f"{task.out}.error.json")


def _raise_failures(failed: dict[str, BaseException], total: int, desc: str) -> None:
    """One line (`ExecutorError`) when every failure is a user error; else `TaskError` with the first
    bug's traceback."""
    bugs = {k: e for k, e in failed.items() if not isinstance(e, UserError)}
    lines = {k: f"{type(e).__name__}: {e}".splitlines()[0] for k, e in failed.items()}
    shown = "; ".join(f"{k}: {v}" for k, v in list(lines.items())[:3])
    more = f" (and {len(failed) - 3} more)" if len(failed) > 3 else ""
    head = f"{len(failed)} of {total} {desc} failed: {shown}{more}; the finished ones are kept, the same command " \
        "runs the rest"
    if not bugs:
        raise ExecutorError(head)
    key, error = next(iter(bugs.items()))
    raise TaskError(f"{head}\n\ntask {key} raised (its traceback in the worker):\n{_traceback(error).rstrip()}") \
        from None


def _store(task: Task, value: Any) -> Any:
    if task.out is None:
        return value
    out = Path(task.out)
    if value is not None and not out.is_file():  # another launch may have written the same bytes meanwhile
        if not isinstance(value, (bytes, bytearray)):
            raise TypeError(f"task {task.key} has an out file, so it must return bytes, not {type(value).__name__}")
        atomic_write(out, lambda p: p.write_bytes(value))
    return out


def _pin_threads(threads: int | None) -> None:  # process-pool initializer
    if threads:
        import torch

        torch.set_num_threads(threads)


class ProcessExecutor(Executor):
    """A local pool of spawned worker processes (fork is unsafe once torch has started threads)."""

    name = "process"

    def _pool(self) -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                                      initializer=_pin_threads, initargs=(self.threads,))

    def _run(self, todo: list[Task], finish: Callable, fail: Callable) -> None:
        pending, attempts = list(todo), {t.key: 0 for t in todo}
        while pending:
            broken: list[Task] = []
            with self._pool() as pool:
                futures = {pool.submit(call, t, self.threads): t for t in pending}
                for fut in cf.as_completed(futures):
                    task = futures[fut]
                    try:
                        value = fut.result()
                    except cf.process.BrokenProcessPool as e:  # a worker died: every unfinished task is lost
                        attempts[task.key] += 1
                        (broken.append(task) if attempts[task.key] <= self.max_retries else fail(task, e))
                    except Exception as e:  # noqa: BLE001
                        fail(task, e)
                    else:
                        finish(task, value)
            pending = [t for t in broken if not t.done()]
            for t in broken:
                if t.done():
                    finish(t, None)


class RayExecutor(Executor):
    """Tasks on a Ray cluster: ``address`` ``"auto"`` (the running cluster) or ``host:port`` (its head),
    else a local cluster of ``workers * threads`` CPUs is started and stopped with the executor. Each
    task asks for ``threads`` CPUs (and one GPU when ``device`` is CUDA); Ray retries a task whose
    worker died up to ``max_retries`` times."""

    name = "ray"

    def __init__(self, *, address: str | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        try:
            import ray
        except ImportError:
            raise ExecutorError("the ray executor needs Ray: pip install 'datadistill[ray]'") from None
        self.ray = ray
        self.threads = self.threads or 1
        self.started = False
        if ray.is_initialized():
            return
        if address:
            _check_reachable(address)
            try:
                ray.init(address=address, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise ExecutorError(f"cannot connect to the Ray cluster at {address}: {str(e).splitlines()[0]}") from None
        else:
            ray.init(num_cpus=self.workers * self.threads, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": _worker_env()})
            self.started = True

    def close(self) -> None:
        if self.started and self.ray.is_initialized():
            self.ray.shutdown()
            self.started = False

    def _run(self, todo: list[Task], finish: Callable, fail: Callable) -> None:
        ray = self.ray
        gpus = 1 if str(self.device).startswith("cuda") else 0
        remote = ray.remote(call).options(num_cpus=self.threads, num_gpus=gpus, max_retries=self.max_retries)
        refs = {remote.remote(t, self.threads): t for t in todo}
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            task = refs.pop(ready[0])
            try:
                value = ray.get(ready[0])
            except ray.exceptions.RayTaskError as e:  # the task raised: report its own error
                cause = e.cause if getattr(e, "cause", None) is not None else e
                fail(task, cause)
            except ray.exceptions.RayError as e:  # its worker died more often than max_retries
                fail(task, e)
            else:
                finish(task, value)


def _worker_env() -> dict[str, str]:
    """What a local cluster's workers must see to import what this process imports: its module path."""
    paths = [p for p in sys.path if p and Path(p).is_dir()]
    env = {"PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}
    for k in ("DATADISTILL_DATA", "XDG_CACHE_HOME"):
        if k in os.environ:
            env[k] = os.environ[k]
    return env


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in one line, within ``timeout`` seconds, when a ``host:port`` head cannot be reached
    (Ray itself waits about a minute and a half before giving up)."""
    if address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ExecutorError(f"--ray-address {address!r}: give host:port of the cluster's head (e.g. 10.0.0.1:6379), "
                            "or auto for the cluster this machine belongs to")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise ExecutorError(f"cannot reach the Ray cluster at {address}: {e.strerror or e}; start it with "
                            "`ray start --head` or check the address") from None


def make_executor(name: str = "serial", *, workers: int | None = None, threads: int | None = None,
                  address: str | None = None, device: str = "cpu", max_retries: int = 3,
                  progress: bool = True) -> Executor:
    """The executor called ``name`` (`BACKENDS`). ``workers``: parallel tasks of a local pool or cluster
    (default: the CPU count divided by ``threads``); ``threads``: torch threads per task (default:
    all for ``serial``, one for the others)."""
    if name not in BACKENDS:
        raise ExecutorError(f"unknown executor {name!r}; valid: {', '.join(BACKENDS)}")
    for label, v in (("workers", workers), ("threads", threads)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ExecutorError(f"{label} must be a positive integer, got {v!r}")
    if address is not None and name != "ray":
        raise ExecutorError(f"a Ray address is for --executor ray, not {name}")
    kw = dict(threads=threads, device=str(device), max_retries=max_retries, progress=progress)
    if name == "serial":
        return Executor(**kw)
    kw["threads"] = threads = threads or 1
    kw["workers"] = workers or max(1, (os.cpu_count() or 1) // threads)
    if name == "process":
        return ProcessExecutor(**kw)
    return RayExecutor(address=address, **kw)


def thread_env(threads: int | None) -> dict[str, str]:
    """This process's environment for a child process with ``threads`` torch threads (None: as it is)."""
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def run_cli(argv: Sequence[str], cwd: str, threads: int | None = None) -> dict[str, Any]:
    """A task that runs ``datadistill ARGV`` in ``cwd`` (a new process, with ``threads`` torch threads):
    its standard output and wall seconds. On failure: `ConfigError` with the command's one-line error
    (exit status 2), else RuntimeError with the end of its standard error (a traceback)."""
    import subprocess

    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "datadistill.cli", *argv], cwd=cwd, env=thread_env(threads),
                       capture_output=True, text=True)
    if p.returncode == 2:  # the command's one-line user error
        tail = p.stderr.strip().splitlines()[-1:] or [""]
        raise ConfigError(f"datadistill {' '.join(argv[:1])} exited with status 2: {tail[0]}")
    if p.returncode:  # a bug, or a killed process: its traceback goes with the error
        raise RuntimeError(f"datadistill {' '.join(argv[:1])} exited with status {p.returncode}:\n"
                           + "\n".join(p.stderr.strip().splitlines()[-40:]))
    return {"stdout": p.stdout, "seconds": time.perf_counter() - t}
