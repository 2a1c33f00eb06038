"""Class-incremental continual learning with a distilled memory (the DC/DM papers' ``CL_DM.py``).

The classes arrive in ``steps`` groups in an order drawn from a seed (``np.random.seed(s);
np.random.permutation(C)``, seeds 0..4 as the released script). At each step the memory gains ``K``
images of each new class, taken from a set (a distilled-set file of any method, or the random
baseline: real images drawn per class), and a fresh network is trained from scratch on the whole
memory (GDumb-style) and tested on the test images of every class seen so far. The networks have
one output per class of the dataset, as the script's.

A file's images of a class are the same whichever step the class arrives at: the memory takes the
class's images from the set distilled on all classes. For DM, whose objective is a sum of one term
per class, that is the set it would distil on the step's classes alone; for methods that couple the
classes (DC, MTT) it is the set distilled with every class present, which a strict protocol would
distil step by step.

Every (set, order, step, model) is one executor task with its result file ``jobs/NAME.json``, so a
run resumes and spreads over any backend; ``records.jsonl`` holds every job's row, ``summary.json``
the mean +- std per set and step over orders and models, ``continual.png`` the curves.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..config import ConfigError
from ..evaluation import EvalProtocol, evaluate
from ..executor import Executor, Task
from ..fileio import atomic_write_text
from ..version import git_commit
from .common import (RANDOM, AppError, SetSource, check_out, data_for, file_ipc, file_memory, job_name, mean_std,
                     random_memory, restrict_test, run_jobs, settings_of, write_records)

# the released script's settings: 3 networks per order, DSA on every set, 1000 epochs (`dsa-paper`)
DEFAULT_PROTOCOL = "dsa-paper"


def class_order(num_classes: int, seed: int) -> list[int]:
    """The script's class order: ``np.random.seed(seed); np.random.permutation(num_classes)``."""
    import numpy as np

    return np.random.RandomState(seed).permutation(num_classes).tolist()


def step_classes(order: Sequence[int], steps: int) -> list[list[int]]:
    """The classes that arrive at each step (``len(order) // steps`` each; the rest never arrive, as
    in the script)."""
    per = len(order) // steps
    return [list(order[s * per:(s + 1) * per]) for s in range(steps)]


@dataclass(frozen=True)
class ContinualConfig:
    dataset: str
    sets: tuple[SetSource, ...]
    steps: int = 5
    orders: tuple[int, ...] = (0, 1, 2, 3, 4)  # class-order seeds
    per_class: int | None = None  # K; None: the sets' images per class
    baselines: tuple[str, ...] = (RANDOM,)
    protocol: EvalProtocol = field(default_factory=lambda: EvalProtocol())
    root: str | None = None
    device: str = "cpu"


def check_config(cfg: ContinualConfig, num_classes: int) -> int:
    """K, after checking what the run asks for (AppError otherwise)."""
    if not 2 <= cfg.steps <= num_classes:
        raise AppError(f"steps must be between 2 and the number of classes ({num_classes}), got {cfg.steps}")
    if not cfg.orders or len(set(cfg.orders)) != len(cfg.orders) or min(cfg.orders) < 0:
        raise AppError(f"orders must be distinct seeds >= 0, got {list(cfg.orders)}")
    bad = [b for b in cfg.baselines if b != RANDOM]
    if bad:
        raise AppError(f"unknown baseline(s) {bad}; valid: {RANDOM} (a herding memory is a herding file: "
                       "--set herding=FILE, made by `datadistill distill --method herding`)")
    if not cfg.sets and not cfg.baselines:
        raise AppError("nothing to compare: give --set NAME=FILE (and/or keep the random baseline)")
    ipcs = {s.name: file_ipc(s.path) for s in cfg.sets}
    k = cfg.per_class
    if k is None:
        if len(set(ipcs.values())) > 1:
            raise AppError(f"the sets hold different numbers of images per class ({ipcs}); give --per-class K (each "
                           "memory then takes the first K of each class)")
        if not ipcs:
            raise AppError("without a set file, give --per-class K for the random baseline")
        k = next(iter(ipcs.values()))
    short = {n: i for n, i in ipcs.items() if i < k}
    if k < 1 or short:
        raise AppError(f"--per-class {k}: the sets {short} hold fewer images per class" if short else
                       f"--per-class must be >= 1, got {k}")
    return k


def continual_job(job: dict[str, Any]) -> bytes:
    """One network trained on the memory of one set after one step of one order: its row (JSON)."""
    source = SetSource(**job["set"])
    f, data = data_for(source, job["dataset"], job["root"], job["device"])
    seen = [c for group in job["groups"][: job["step"] + 1] for c in group]
    if f is None:
        memory = random_memory(data.train, seen, job["per_class"], seed=job["order"])
    else:
        memory = file_memory(f, seen, job["per_class"])
    t0 = time.perf_counter()
    # network i of order o is the (o * n_models + i)-th of the protocol: a fresh initialization per order and
    # network (the script draws a new random network every time), the same one at every step of an order
    protocol = EvalProtocol(**job["protocol"])
    index = job["order"] * protocol.n_models + job["model"]
    rep = evaluate(memory, restrict_test(data, seen), protocol.with_(n_models=index + 1), device=job["device"],
                   indices=[index])
    row = {"set": source.name, "file": source.path, "dataset": job["dataset"], "order": job["order"],
           "class_order": [c for g in job["groups"] for c in g], "step": job["step"] + 1,
           "classes_seen": len(seen), "memory_images": len(memory), "memory_floats": memory.floats(),
           "model": job["model"], "seed": rep.seeds[0], "accuracy": 100 * rep.accuracies[0],
           "test_images": len(restrict_test(data, seen).test), "seconds": time.perf_counter() - t0,
           "protocol": rep.protocol.name, "epochs": rep.protocol.epochs, "augment": rep.protocol.augment,
           "commit": git_commit()}
    if "labels" in rep.extra:
        row["labels"] = rep.extra["labels"]
    row["settings"] = settings_of(job)
    return json.dumps(row).encode()


def continual(cfg: ContinualConfig, out: str | Path, executor: Executor) -> dict[str, Any]:
    """Run (or resume) the protocol for every set; returns the summary (also ``out/summary.json``)."""
    from ..data import load_dataset

    out = check_out(out, "continual-learning folder")
    data = load_dataset(cfg.dataset, cfg.root)
    k = check_config(cfg, data.spec.num_classes)
    sources = list(cfg.sets) + [SetSource(b) for b in cfg.baselines]
    tasks = []
    for src in sources:
        for o in cfg.orders:
            groups = step_classes(class_order(data.spec.num_classes, o), cfg.steps)
            for step in range(cfg.steps):
                for m in range(cfg.protocol.n_models):
                    job = {"set": src.to_dict(), "dataset": cfg.dataset, "root": cfg.root, "device": cfg.device,
                           "groups": groups, "order": o, "step": step, "model": m, "per_class": k,
                           "protocol": cfg.protocol.to_dict()}
                    name = job_name(src.name, f"order{o}", f"step{step + 1}", f"model{m}")
                    tasks.append(Task(key=name, fn=continual_job, args=(job,), out=out / "jobs" / f"{name}.json"))
    _write_config(out, cfg, k)
    rows = run_jobs(executor, out, tasks, "continual")
    write_records(out, rows)
    summary = summarize(rows, cfg, k)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    atomic_write_text(out / "summary.md", format_summary(summary) + "\n")
    plot_continual(summary, out / "continual.png")
    return summary


def _write_config(out: Path, cfg: ContinualConfig, k: int) -> None:
    d = asdict(cfg)
    d["protocol"] = cfg.protocol.to_dict()
    d["per_class"] = k
    atomic_write_text(out / "config.json", json.dumps(d, indent=1) + "\n")


def summarize(rows: list[dict[str, Any]], cfg: ContinualConfig, k: int) -> dict[str, Any]:
    """Mean +- std (population, over orders x models) of the accuracy per set and step."""
    sets: dict[str, Any] = {}
    for name in dict.fromkeys(r["set"] for r in rows):
        mine = [r for r in rows if r["set"] == name]
        per_step = []
        for step in range(1, cfg.steps + 1):
            rs = [r for r in mine if r["step"] == step]
            m, s = mean_std([r["accuracy"] for r in rs])
            per_step.append({"step": step, "classes_seen": rs[0]["classes_seen"], "acc_mean": round(m, 2),
                             "acc_std": round(s, 2), "n": len(rs), "memory_images": rs[0]["memory_images"],
                             "memory_floats": rs[0]["memory_floats"]})
        sets[name] = {"file": mine[0]["file"], "steps": per_step,
                      "mean_over_steps": round(sum(p["acc_mean"] for p in per_step) / len(per_step), 2)}
    return {"app": "continual", "dataset": cfg.dataset, "steps": cfg.steps, "orders": list(cfg.orders),
            "per_class": k, "n_models": cfg.protocol.n_models, "protocol": cfg.protocol.to_dict(),
            "seconds": round(sum(r["seconds"] for r in rows), 1), "sets": sets}


def format_summary(summary: dict[str, Any]) -> str:
    """A Markdown table: one row per set, one column per step (accuracy on the classes seen), the mean
    over the steps and the memory's floats after the last step."""
    steps = summary["steps"]
    first = next(iter(summary["sets"].values()))["steps"]
    head = " | ".join(f"step {p['step']} ({p['classes_seen']} cl.)" for p in first)
    lines = [f"| set | {head} | mean | memory floats (last step) |", "|---" * (steps + 3) + "|"]
    for name, s in summary["sets"].items():
        cells = " | ".join(f"{p['acc_mean']:.2f} ± {p['acc_std']:.2f}" for p in s["steps"])
        lines.append(f"| {name} | {cells} | {s['mean_over_steps']:.2f} | {s['steps'][-1]['memory_floats']:,} |")
    return "\n".join(lines)


def plot_continual(summary: dict[str, Any], path: Path) -> Path:
    """Accuracy on the classes seen after each step, one curve per set (mean +- std band)."""
    from ..viz import plt_figure, save_figure

    fig, ax = plt_figure()
    for name, s in summary["sets"].items():
        xs = [p["classes_seen"] for p in s["steps"]]
        ms = [p["acc_mean"] for p in s["steps"]]
        sd = [p["acc_std"] for p in s["steps"]]
        ax.plot(xs, ms, marker="o", label=name)
        ax.fill_between(xs, [m - d for m, d in zip(ms, sd)], [m + d for m, d in zip(ms, sd)], alpha=0.2)
    ax.set_xlabel("classes seen")
    ax.set_ylabel("test accuracy on the classes seen (%)")
    ax.set_title(f"{summary['dataset']}: {summary['per_class']} images per class, "
                 f"{len(summary['orders'])} orders x {summary['n_models']} networks", fontsize=10)
    ax.legend()
    return save_figure(fig, path)


def parse_orders(text: str) -> tuple[int, ...]:
    """``"0-4"`` or ``"0,1,2"`` -> seeds."""
    try:
        if "-" in text:
            a, b = text.split("-")
            return tuple(range(int(a), int(b) + 1))
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--orders {text!r}: give seeds as 0-4 or 0,1,2") from None
