"""The study protocol, its registry and the one runner every study goes through.

A study is every job that is not a distillation: a grid of independent training jobs whose rows are
summarized into a table and a figure. A study is a `Study` subclass in one module of this package,
registered with ``@STUDIES.register("name")``; the package imports each of its modules, so a new
study is one file here and nothing else (the ``datadistill study`` command builds its flags from
the study's config fields, `datadistill.cli.study`).

`run_study` owns what every study shares: the output folder, ``config.json``, one executor task per
job (serial by default; process and Ray as for every other grid), each task's result file
``jobs/NAME.json`` (a resumed study trains only what is missing, and a result made with other
settings is an error, never a silent reuse), ``records.jsonl`` (one row per job), ``summary.json``,
``summary.md`` and the figure. A task carries the study's registry name and its job as plain JSON
and rebuilds the study in the worker, so every backend runs the same code.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import pkgutil
import re
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

from ..config import ConfigError
from ..executor import Executor, Task
from ..fileio import atomic_write_text
from ..paths import check_output_dir
from ..registry import Registry

JOBS = "jobs"
RECORDS = "records.jsonl"
VOLATILE = ("device", "root", "out")  # where a job runs, not what it computes


class StudyError(ConfigError):
    """A study was asked for something it cannot do (bad sets, sizes or options)."""


@dataclass(frozen=True)
class Job:
    """One task of a study: a file-safe ``name`` (its result is ``jobs/NAME.json``) and ``spec``, a
    JSON-able dict of what it computes (plus where it runs: `VOLATILE` keys)."""

    name: str
    spec: dict[str, Any]


class Study:
    """A study: subclass it, set ``config`` (a frozen dataclass whose fields are the study's settings;
    field metadata ``help``, ``parse``, ``many``, ``flag``, ``metavar`` and, for an `EvalProtocol`
    field, ``protocol`` and ``n_models`` shape its command-line flags) and ``what`` (its folder in
    one phrase), and write the hooks. `run_study` calls them in this order: `check`, `jobs`, `run`
    (once per job not done, possibly in another process), `records`, `summarize`, `format`, `plot`;
    the benchmark runner reads `metrics`."""

    name: ClassVar[str] = ""
    config: ClassVar[type]
    what: ClassVar[str] = "study folder"
    help: ClassVar[str] = ""
    figure: ClassVar[str | None] = None  # the figure's file name in the folder (None: no figure)

    def check(self, cfg: Any) -> dict[str, Any]:
        """Validate ``cfg`` before any job runs (`StudyError` otherwise); return the values it resolves
        (they are saved with the config and given to `jobs` and `summarize`)."""
        return {}

    def jobs(self, cfg: Any, out: Path, resolved: dict[str, Any]) -> list[Job]:
        raise NotImplementedError

    def run(self, job: dict[str, Any]) -> dict[str, Any]:
        """One job: its row (JSON-able). Runs in a worker; only ``job`` is known there."""
        raise NotImplementedError

    def records(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rows as ``records.jsonl`` keeps them (default: all of every row)."""
        return rows

    def summarize(self, cfg: Any, rows: list[dict[str, Any]], resolved: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def format(self, summary: dict[str, Any]) -> str:
        """The summary as Markdown (``summary.md`` and the command's output)."""
        raise NotImplementedError

    def plot(self, summary: dict[str, Any], path: Path) -> Path | None:
        return None

    def schedule(self, executor: Executor, tasks: list[Task], out: Path) -> None:
        """Run some of the tasks not done yet a study's own way before the executor runs the rest (each
        writes its task's file); default nothing (the sweep: a Ray Tune grid search under Ray)."""

    def metrics(self, summary: dict[str, Any]) -> dict[str, Any]:
        """The summary's headline figures as flat fields that a benchmark expectation can name
        (``benchmarks/run.py`` adds them to the study's record); default none."""
        return {}


STUDIES: Registry[type[Study]] = Registry("study")
_found = False


def discover() -> None:
    """Import every module of the studies package (once), so that each study registers itself."""
    global _found
    if _found:
        return
    package = sys.modules[__package__]
    for m in pkgutil.iter_modules(package.__path__):
        if not m.name.startswith("_"):
            importlib.import_module(f"{__package__}.{m.name}")
    _found = True


def get_study(name: str) -> Study:
    """The registered study ``name`` (every module of the package imported first)."""
    discover()
    cls = STUDIES.get(name)
    return cls()


def run_job(study: str, job: dict[str, Any]) -> bytes:
    """An executor's task: study ``study``'s job as its JSON row, with the job's ``settings``."""
    row = get_study(study).run(job)
    row["settings"] = settings_of(job)
    return json.dumps(row).encode()


def run_study(study: str | Study, cfg: Any, out: str | Path, executor: Executor | None = None) -> dict[str, Any]:
    """Run (or resume) ``study`` with the config ``cfg`` into the folder ``out`` through ``executor``
    (default: serial, in this process); returns the summary (also ``out/summary.json``)."""
    from ..executor import make_executor

    s = get_study(study) if isinstance(study, str) else study
    if not isinstance(cfg, s.config):
        raise TypeError(f"study {s.name!r} takes a {s.config.__name__}, got {type(cfg).__name__}")
    out = Path(out)
    check_output_dir(out, s.what)
    resolved = s.check(cfg)
    out.mkdir(parents=True, exist_ok=True)
    jobs = s.jobs(cfg, out, resolved)
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise RuntimeError(f"study {s.name!r} named two jobs alike: {twice[:3]}")
    atomic_write_text(out / "config.json", json.dumps({"study": s.name, **config_dict(cfg), **resolved}, indent=1,
                                                      default=_jsonable) + "\n")
    tasks = [Task(key=j.name, fn=run_job, args=(s.name, j.spec), out=out / JOBS / f"{j.name}.json") for j in jobs]
    if executor is None:
        executor = make_executor("serial", progress=False)
    rows = run_jobs(executor, out, tasks, s.name, schedule=lambda todo: s.schedule(executor, todo, out))
    write_records(out, s.records(rows))
    summary = s.summarize(cfg, rows, resolved)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    atomic_write_text(out / "summary.md", s.format(summary) + "\n")
    if s.figure:
        s.plot(summary, out / s.figure)
    return summary


# -- configs as JSON --------------------------------------------------------------------------------------
def _jsonable(v: Any) -> Any:
    if hasattr(v, "to_dict"):
        return v.to_dict()
    if dataclasses.is_dataclass(v):
        return dataclasses.asdict(v)
    if isinstance(v, (set, frozenset, tuple)):
        return list(v)
    raise TypeError(f"{type(v).__name__} is not JSON-able")


def config_dict(cfg: Any) -> dict[str, Any]:
    """A study config as JSON-able values (an `EvalProtocol` by its ``to_dict``)."""
    return json.loads(json.dumps({f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)},
                                 default=_jsonable))


def config_from_dict(cls: type, d: dict[str, Any]) -> Any:
    """`config_dict`'s inverse: nested dataclasses (an `EvalProtocol`, sources) and tuples rebuilt
    from the field types."""
    hints = typing.get_type_hints(cls)
    return cls(**{f.name: _from_json(hints[f.name], d[f.name]) for f in dataclasses.fields(cls) if f.name in d})


def _from_json(tp: Any, v: Any) -> Any:
    if v is None:
        return None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union or type(tp).__name__ == "UnionType":
        inner = [a for a in args if a is not type(None)]
        return _from_json(inner[0], v) if len(inner) == 1 else v
    if origin is tuple:
        return tuple(_from_json(args[0], x) for x in v)
    if hasattr(tp, "from_dict") and isinstance(v, dict):  # an `EvalProtocol`: its flat fields
        return tp.from_dict(v)
    if dataclasses.is_dataclass(tp):
        return config_from_dict(tp, v) if isinstance(v, dict) else v
    return v


# -- jobs and records ------------------------------------------------------------------------------------
def job_name(*parts: Any) -> str:
    """A job's file name from its coordinates (file-safe)."""
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "-", "-".join(str(p) for p in parts))


def settings_of(job: dict[str, Any]) -> dict[str, Any]:
    """What a job computes (its row keeps it as ``settings``): the job less where it runs, as JSON."""
    return json.loads(json.dumps({k: v for k, v in job.items() if k not in VOLATILE}))


def run_jobs(executor: Executor, out: Path, tasks: list[Task], desc: str,
             schedule: Callable[[list[Task]], None] | None = None) -> list[dict[str, Any]]:
    """Run the tasks not done yet (each writes ``out/jobs/NAME.json``; ``schedule`` may run some of them
    first, its own way), then every job's row, in order. A result file made with other settings
    (another protocol, another file under the same name) is an error, never a silent reuse."""
    stale = []
    for t in tasks:
        if t.done():
            diff = settings_diff(Path(t.out), t.args[-1])
            if diff:
                stale.append(f"{Path(t.out).name} ({', '.join(diff)})")
    if stale:
        raise StudyError(f"{out} holds results made with other settings: {'; '.join(stale[:3])}"
                         f"{' ...' if len(stale) > 3 else ''}; give another --out (or remove those files)")
    if any(not t.done() for t in tasks):
        check_output_dir(out / JOBS, "results folder")
        if schedule is not None:
            schedule(tasks)
    files = executor.run(tasks, desc=desc)
    return [json.loads(Path(files[t.key]).read_text()) for t in tasks]


def settings_diff(path: Path, job: dict[str, Any]) -> list[str]:
    """The settings (top-level keys) in which the job result file ``path`` differs from ``job``: none
    when it was made with the job's settings."""
    kept, now = _kept_settings(path), settings_of(job)
    return sorted(k for k in set(kept) | set(now) if kept.get(k) != now.get(k))


def _kept_settings(path: Path) -> dict[str, Any]:
    """The settings a job's result file was made with; a file that does not say (an older version's,
    or not a job's result) cannot be checked and is refused, never reused unchecked."""
    try:
        row = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise StudyError(f"{path} is not a job result this study can read ({e}); remove it to run the job again") \
            from None
    if not isinstance(row, dict) or not isinstance(row.get("settings"), dict):
        raise StudyError(f"{path} does not record the settings it was made with (an older version's result?), so "
                         "it cannot be reused safely; remove it to run the job again, or give another --out")
    return row["settings"]


def write_records(out: Path, rows: list[dict[str, Any]], name: str = RECORDS) -> Path:
    """All rows as JSON lines, written atomically."""
    path = out / name
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=False) + "\n" for r in rows))
    return path


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population standard deviation (as the papers' ``np.std``)."""
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    m = sum(values) / n
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / n)
