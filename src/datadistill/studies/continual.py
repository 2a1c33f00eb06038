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

Every (set, order, step, model) is one job of the study (`studies.run_study`: one executor task
with its result file ``jobs/NAME.json``, so a run resumes and spreads over any backend);
``records.jsonl`` holds every job's row, ``summary.json`` the mean +- std per set and step over
orders and models, ``continual.png`` the curves.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..config import ConfigError
from ..evaluation import EvalProtocol, evaluate, get_protocol
from ..version import git_commit
from .base import STUDIES, Job, Study, StudyError, job_name, mean_std
from .sets import (RANDOM, SETS_FIELD, SetSource, check_datasets, data_for, file_ipc, file_memory, random_memory,
                   restrict_test)

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


def parse_orders(text: str) -> tuple[int, ...]:
    """``"0-4"`` or ``"0,1,2"`` -> seeds."""
    try:
        if "-" in text:
            a, b = text.split("-")
            return tuple(range(int(a), int(b) + 1))
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--orders {text!r}: give seeds as 0-4 or 0,1,2") from None


@dataclass(frozen=True)
class ContinualConfig:
    dataset: str = field(metadata={"help": "the dataset (of the sets, when files are given)"})
    sets: tuple[SetSource, ...] = field(default=(), metadata=SETS_FIELD)
    steps: int = field(default=5, metadata={"help": "class groups arriving one after another (default 5)"})
    orders: tuple[int, ...] = field(default=(0, 1, 2, 3, 4), metadata={
        "parse": parse_orders, "metavar": "0-4", "help": "class-order seeds (default 0-4, as the script)"})
    per_class: int | None = field(default=None, metadata={"help": "K images per class (default: the sets' own)"})
    random: bool = field(default=True, metadata={"help": "the random baseline (real images drawn per class)"})
    protocol: EvalProtocol = field(default_factory=lambda: get_protocol(DEFAULT_PROTOCOL, n_models=3), metadata={
        "protocol": DEFAULT_PROTOCOL, "n_models": 3})
    root: str | None = None
    device: str = "cpu"


def check_config(cfg: ContinualConfig, num_classes: int) -> int:
    """K, after checking what the run asks for (StudyError otherwise)."""
    if not 2 <= cfg.steps <= num_classes:
        raise StudyError(f"steps must be between 2 and the number of classes ({num_classes}), got {cfg.steps}")
    if not cfg.orders or len(set(cfg.orders)) != len(cfg.orders) or min(cfg.orders) < 0:
        raise StudyError(f"orders must be distinct seeds >= 0, got {list(cfg.orders)}")
    check_datasets(cfg.sets, cfg.dataset)
    if not cfg.sets and not cfg.random:
        raise StudyError("nothing to compare: give --set NAME=FILE (and/or keep the random baseline)")
    ipcs = {s.name: file_ipc(s.path) for s in cfg.sets}
    k = cfg.per_class
    if k is None:
        if len(set(ipcs.values())) > 1:
            raise StudyError(f"the sets hold different numbers of images per class ({ipcs}); give --per-class K (each "
                           "memory then takes the first K of each class)")
        if not ipcs:
            raise StudyError("without a set file, give --per-class K for the random baseline")
        k = next(iter(ipcs.values()))
    short = {n: i for n, i in ipcs.items() if i < k}
    if k < 1 or short:
        raise StudyError(f"--per-class {k}: the sets {short} hold fewer images per class" if short else
                       f"--per-class must be >= 1, got {k}")
    return k


def continual_job(job: dict[str, Any]) -> dict[str, Any]:
    """One network trained on the memory of one set after one step of one order: its row."""
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
    protocol = EvalProtocol.from_dict(job["protocol"])
    index = job["order"] * protocol.n_models + job["model"]
    rep = evaluate(memory, restrict_test(data, seen), protocol.with_(n_models=index + 1), device=job["device"],
                   indices=[index])
    row = {"set": source.name, "file": source.path, "dataset": job["dataset"], "order": job["order"],
           "class_order": [c for g in job["groups"] for c in g], "step": job["step"] + 1,
           "classes_seen": len(seen), "memory_images": len(memory), "memory_floats": memory.floats(),
           "model": job["model"], "seed": rep.seeds[0], "accuracy": 100 * rep.accuracies[0],
           "test_images": len(restrict_test(data, seen).test), "seconds": time.perf_counter() - t0,
           "protocol": rep.protocol.name, "epochs": rep.protocol.schedule.epochs, "augment": rep.protocol.augment.name,
           "commit": git_commit()}
    if "labels" in rep.extra:
        row["labels"] = rep.extra["labels"]
    return row


@STUDIES.register("continual")
class Continual(Study):
    """Class-incremental learning with a memory of K images per class from each set (DC/DM's CL_DM.py)."""

    name = "continual"
    config = ContinualConfig
    what = "continual-learning folder"
    help = ("class-incremental learning with a memory of K images per class from each set (DC/DM's CL_DM.py); "
            "resumable")
    figure = "continual.png"

    def check(self, cfg: ContinualConfig) -> dict[str, Any]:
        from ..data import load_dataset

        spec = load_dataset(cfg.dataset, cfg.root).spec
        return {"per_class": check_config(cfg, spec.num_classes), "num_classes": spec.num_classes}

    def jobs(self, cfg: ContinualConfig, out: Path, resolved: dict[str, Any]) -> list[Job]:
        sources = list(cfg.sets) + ([SetSource(RANDOM)] if cfg.random else [])
        jobs = []
        for src in sources:
            for o in cfg.orders:
                groups = step_classes(class_order(resolved["num_classes"], o), cfg.steps)
                for step in range(cfg.steps):
                    for m in range(cfg.protocol.n_models):
                        job = {"set": src.to_dict(), "dataset": cfg.dataset, "root": cfg.root, "device": cfg.device,
                               "groups": groups, "order": o, "step": step, "model": m,
                               "per_class": resolved["per_class"], "protocol": cfg.protocol.to_dict()}
                        jobs.append(Job(job_name(src.name, f"order{o}", f"step{step + 1}", f"model{m}"), job))
        return jobs

    def run(self, job: dict[str, Any]) -> dict[str, Any]:
        return continual_job(job)

    def summarize(self, cfg: ContinualConfig, rows: list[dict[str, Any]], resolved: dict[str, Any]) -> dict[str, Any]:
        return summarize(rows, cfg, resolved["per_class"])

    def format(self, summary: dict[str, Any]) -> str:
        return format_summary(summary)

    def plot(self, summary: dict[str, Any], path: Path) -> Path:
        return plot_continual(summary, path)

    def metrics(self, summary: dict[str, Any]) -> dict[str, Any]:
        """``SET_last`` (accuracy after the last step) and ``SET_mean`` (over the steps)."""
        out: dict[str, Any] = {}
        for name, s in summary["sets"].items():
            out[f"{name}_last"], out[f"{name}_mean"] = s["steps"][-1]["acc_mean"], s["mean_over_steps"]
        return out


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
