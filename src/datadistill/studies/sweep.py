"""Hyper-parameter sweeps as a study: every point of a ``key=v1,v2`` grid is distilled and scored on a
validation split carved from the training data (``dataset_options.validation``: a fixed fraction of
each class held out), never on the test set; the points are ranked by that validation accuracy.

The run every point starts from is a preset, the run flags (method, dataset, ipc, iterations, seed)
and ``key=value`` overrides, as `datadistill distill` takes them. Each point is one job of
`run_study` (``jobs/NAME.json``, NAME from the point's settings; its run folder ``runs/NAME/``), so a
sweep resumes where it stopped and a point made with other settings is an error, never reused. With
the ``ray`` executor the points not yet done run as a Ray Tune grid search (``tune.grid_search``,
one trial per point, its state under ``tune/``); with ``serial`` or ``process`` as plain tasks. Both
give the same numbers for the same thread count per task.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from ..cache import config_hash
from ..config import ConfigError, RunConfig, apply_overrides, from_dict, load_preset
from ..executor import Executor, Task, call
from ..fileio import atomic_write_text
from .base import STUDIES, Job, Study, StudyError


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


def _strings(items: Sequence[str]) -> tuple[str, ...]:
    return tuple(str(i) for i in items)


@dataclass(frozen=True)
class SweepConfig:
    grid: tuple[str, ...] = field(metadata={
        "help": "a swept key and its values, KEY=V1,V2 (repeat for more keys: every combination runs)",
        "many": True, "parse": _strings, "metavar": "KEY=V1,V2"})
    preset: str | None = field(default=None, metadata={"help": "the run's YAML preset (name or path)"})
    method: str | None = None
    dataset: str | None = None
    ipc: int | None = field(default=None, metadata={"help": "images per class"})
    iterations: int | None = None
    seed: int | None = None
    overrides: tuple[str, ...] = field(default=(), metadata={
        "help": "a run setting shared by every point, KEY=VALUE (repeatable)", "many": True, "parse": _strings,
        "flag": "--set", "metavar": "KEY=VALUE"})
    validation: float = field(default=0.1, metadata={
        "help": "fraction of each class of the training set held out to score the points (default 0.1)"})
    root: str | None = None
    device: str = "cpu"


def base_run(cfg: SweepConfig) -> dict[str, Any]:
    """The run every point starts from: the preset, then the run fields given, then the overrides."""
    base: dict[str, Any] = load_preset(cfg.preset) if cfg.preset else {}
    fields = {"dataset": cfg.dataset, "method": cfg.method, "ipc": cfg.ipc, "iterations": cfg.iterations,
              "seed": cfg.seed}
    base.update({k: v for k, v in fields.items() if v is not None})
    return apply_overrides(base, list(cfg.overrides))


@STUDIES.register("sweep")
class Sweep(Study):
    name = "sweep"
    config = SweepConfig
    what = "sweep folder"
    help = ("rank a grid of settings by accuracy on a validation split of the training data (never the test "
            "set); resumable; with --executor ray a Ray Tune grid search")

    def check(self, cfg: SweepConfig) -> dict[str, Any]:
        if not 0 < cfg.validation < 1:
            raise StudyError(f"validation={cfg.validation!r}: the held-out fraction of the training set, in (0, 1)")
        base, grid = base_run(cfg), parse_grid(cfg.grid)
        for p in grid_points(grid):  # every point's config is valid before anything runs
            trial_config(base, p, cfg.validation)
        return {"base": base, "points": grid_points(grid)}

    def jobs(self, cfg: SweepConfig, out: Path, resolved: dict[str, Any]) -> list[Job]:
        return [Job(point_name(p), {"base": resolved["base"], "point": p, "validation": cfg.validation,
                                    "out": str(out / "runs" / point_name(p)), "root": cfg.root,
                                    "device": cfg.device}) for p in resolved["points"]]

    def run(self, job: dict[str, Any]) -> dict[str, Any]:
        """Distil one point and score it on the validation split."""
        from ..engine import run

        cfg = trial_config({**job["base"], "device": job["device"], "data_root": job["root"]}, job["point"],
                           job["validation"])
        out = Path(job["out"])
        result = run(cfg, out, resume=(out / "config.yaml").is_file(), progress=False, log=lambda *a, **k: None)
        (model, rep), = result.reports.items()
        return {"point": job["point"], "val_acc": 100 * rep.mean, "val_std": 100 * rep.std,
                "accuracies": rep.accuracies, "model": model, "validation": job["validation"],
                "seconds_per_iteration": result.seconds_per_iteration, "wall_seconds": result.wall_seconds,
                "run_dir": str(out)}

    def schedule(self, executor: Executor, tasks: list[Task], out: Path) -> None:
        """Under Ray, the points not yet done as a Ray Tune grid search; each trial's result file is
        written here (the executor then finds every task done)."""
        from ..executor import RayExecutor

        todo = {t.key: t for t in tasks if not t.done()}
        if not isinstance(executor, RayExecutor) or not todo:
            return
        from ray import tune

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

    def summarize(self, cfg: SweepConfig, rows: list[dict[str, Any]], resolved: dict[str, Any]) -> dict[str, Any]:
        ranked = sorted(rows, key=lambda r: -r["val_acc"])
        return {"study": self.name, "keys": list(parse_grid(cfg.grid)), "validation": cfg.validation,
                "base": resolved["base"], "results": [{k: v for k, v in r.items() if k != "settings"} for r in ranked]}

    def format(self, summary: dict[str, Any]) -> str:
        """One row per point, best validation accuracy first."""
        keys = summary["keys"]
        lines = [f"| {' | '.join(keys)} | validation accuracy (%) | s/iteration |", "|" + "---|" * (len(keys) + 2)]
        for r in summary["results"]:
            lines.append(f"| {' | '.join(str(r['point'][k]) for k in keys)} | {r['val_acc']:.2f} ± "
                         f"{r['val_std']:.2f} | {r['seconds_per_iteration']:.3f} |")
        return "\n".join(lines)

    def metrics(self, summary: dict[str, Any]) -> dict[str, Any]:
        """``best_val_acc``: the validation accuracy of the best point."""
        return {"best_val_acc": round(summary["results"][0]["val_acc"], 2)}
