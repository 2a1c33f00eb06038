"""Hyper-parameter sweeps: every point of a ``key=v1,v2`` grid is distilled and scored on a
validation split carved from the training data (``dataset_options.validation``: a fixed fraction of
each class held out), never on the test set; the points are ranked by that validation accuracy.

Each point is one task whose result file is ``trials/NAME.json`` (NAME from the point's settings),
so a sweep resumes where it stopped. With the ``ray`` executor the points run as a Ray Tune grid
search (``tune.grid_search``), one trial per point; with ``serial`` or ``process`` they run as
plain executor tasks. Both give the same numbers for the same thread count per task.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any, Sequence

import yaml

from .cache import config_hash
from .config import ConfigError, RunConfig, apply_overrides, from_dict
from .executor import Executor, RayExecutor, Task, call
from .fileio import atomic_write_text

TRIALS = "trials"


def parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    """``["method_config.lr_img=0.1,1,10", "iterations=20,40"]`` -> ``{key: [values]}`` (each value
    read as YAML, as a ``key=value`` override is)."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq or not key or not raw.strip():
            raise ConfigError(f"--grid {item!r}: give key=value1,value2,... (e.g. method_config.lr_img=0.1,1,10)")
        if key in grid:
            raise ConfigError(f"--grid names {key!r} twice; give all its values in one --grid")
        try:
            grid[key] = [yaml.safe_load(v) for v in raw.split(",")]
        except yaml.YAMLError as e:
            raise ConfigError(f"--grid {item!r}: a value is not valid YAML ({e})") from None
    if not grid:
        raise ConfigError("a sweep needs at least one --grid key=value1,value2,...")
    return grid


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in the order given."""
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def point_name(point: dict[str, Any]) -> str:
    """A file name for the point: its settings, readable, plus a hash that makes it unique."""
    text = "_".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in point.items())
    return f"{re.sub(r'[^A-Za-z0-9_.=-]+', '-', text)[:80]}-{config_hash(point, 8)}"


def trial_config(base: dict[str, Any], point: dict[str, Any], validation: float) -> RunConfig:
    """The run of one point: ``base`` with the point's settings, on the validation split."""
    d = apply_overrides(base, [f"{k}={json.dumps(v)}" for k, v in point.items()])
    d["dataset_options"] = {**(d.get("dataset_options") or {}), "validation": validation}
    d["eval_every"], d["models"] = 0, []  # one final evaluation on the validation part, of eval.model
    return from_dict(RunConfig, d, where="config")


def run_trial(base: dict[str, Any], point: dict[str, Any], validation: float, run_dir: str) -> bytes:
    """Distil one point and score it on the validation split: the JSON of its result (a task)."""
    from .engine import run

    cfg = trial_config(base, point, validation)
    out = Path(run_dir)
    result = run(cfg, out, resume=(out / "config.yaml").is_file(), progress=False, log=lambda *a, **k: None)
    (model, rep), = result.reports.items()
    return json.dumps({"point": point, "val_acc": 100 * rep.mean, "val_std": 100 * rep.std,
                       "accuracies": rep.accuracies, "model": model, "validation": validation,
                       "seconds_per_iteration": result.seconds_per_iteration, "wall_seconds": result.wall_seconds,
                       "run_dir": str(out)}).encode()


def sweep(base: dict[str, Any], grid: dict[str, list[Any]], out: str | Path, executor: Executor, *,
          validation: float = 0.1) -> list[dict[str, Any]]:
    """Run every point of ``grid`` over the run config ``base`` (a dict, as a preset plus overrides)
    into ``out`` and return their results, best validation accuracy first. ``out`` gets
    ``trials/NAME.json`` per point, ``runs/NAME/`` (its run folder) and ``sweep.md`` (the table)."""
    if not 0 < validation < 1:
        raise ConfigError(f"validation={validation!r}: the held-out fraction of the training set, in (0, 1)")
    out = Path(out)
    points = grid_points(grid)
    for p in points:  # every point's config is valid before anything runs
        trial_config(base, p, validation)
    tasks = [Task(point_name(p), run_trial, (base, p, validation, str(out / "runs" / point_name(p))),
                  out=out / TRIALS / f"{point_name(p)}.json") for p in points]
    if isinstance(executor, RayExecutor):
        _tune(tasks, executor, out)
    executor.run(tasks, desc="sweep")  # the serial and process backends; after Tune: only checks the files
    results = [json.loads(Path(t.out).read_text()) for t in tasks]
    results.sort(key=lambda r: -r["val_acc"])
    atomic_write_text(out / "sweep.md", table(results, grid))
    return results


def _tune(tasks: list[Task], executor: RayExecutor, out: Path) -> None:
    """The points not yet done as a Ray Tune grid search; each trial's result file is written here."""
    from ray import tune

    todo = {t.key: t for t in tasks if not t.done()}
    if not todo:
        return
    threads = executor.threads

    def trainable(config: dict[str, Any]) -> None:
        blob = call(todo[config["point"]], threads)
        tune.report({"val_acc": json.loads(blob)["val_acc"], "result": blob.decode()})

    gpus = 1 if str(executor.device).startswith("cuda") else 0
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": threads, "gpu": gpus}),
        param_space={"point": tune.grid_search(list(todo))},
        tune_config=tune.TuneConfig(metric="val_acc", mode="max", trial_dirname_creator=lambda t: t.trial_id),
        run_config=tune.RunConfig(storage_path=str((out / "tune").resolve()), name="sweep", verbose=0),
    )
    for r in tuner.fit():
        if r.error is None and r.metrics and "result" in r.metrics:
            atomic_write_text(Path(todo[r.config["point"]].out), r.metrics["result"])


def table(results: list[dict[str, Any]], grid: dict[str, list[Any]]) -> str:
    """Markdown: one row per point, best validation accuracy first."""
    keys = list(grid)
    lines = [f"| {' | '.join(keys)} | validation accuracy (%) | s/iteration |",
             "|" + "---|" * (len(keys) + 2)]
    for r in results:
        cells = [str(r["point"][k]) for k in keys]
        lines.append(f"| {' | '.join(cells)} | {r['val_acc']:.2f} ± {r['val_std']:.2f} | "
                     f"{r['seconds_per_iteration']:.3f} |")
    return "\n".join(lines) + "\n"
