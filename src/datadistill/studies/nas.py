"""A distilled set as a proxy for architecture search (the DC paper's NAS experiment, section 4.3).

A grid of ConvNet variants of the model zoo (width x depth x normalisation x pooling; 16 by default)
is trained twice: on each proxy set (distilled-set files, the random baseline of the same size) and
on the whole training set. Each proxy's ranking of the architectures is compared with the whole
data's by Spearman's rho and Kendall's tau, and the architecture a proxy picks is scored by its
whole-data accuracy; the time saved is the whole-data training time over the proxy's.

A reference ranks only if it agrees with itself: the whole data trains ``full_protocol.n_models``
networks per architecture (2 by default, seeds 0 and 1), and the summary states the two seeds'
rankings' correlation (``full.seed_spearman``, ``full.seed_kendall``; the mean over pairs beyond two)
and ``full.stable`` (seed Spearman >= `STABLE`). The proxies are ranked against the mean over seeds.
Below that bar a proxy's correlation measures the reference's noise, and the table says so.

Every (set, architecture, model) is one job of the study (`studies.run_study`: one executor task
with its result file ``jobs/NAME.json``; resumable, on any backend). ``records.jsonl`` holds every
job's row, ``summary.json`` the correlations, ``nas.png`` proxy against whole-data accuracy.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..evaluation import EvalProtocol, evaluate, get_protocol
from ..evaluation.evaluator import RealSet
from ..models import create_model
from ..version import git_commit
from ..fileio import atomic_write_text
from .base import (JOBS, STUDIES, Job, Study, StudyError, job_name, mean_std, settings_diff,
                   settings_of)
from .sets import RANDOM, SETS_FIELD, SetSource, check_datasets, data_for, file_ipc, file_memory, random_memory

FULL = "full"
STABLE = 0.8  # the seeds' Spearman at which the whole-data ranking is taken as a reference
# the default grid: 2 widths x 2 depths x 2 normalisations x 2 poolings = 16 ConvNets
DEFAULT_GRID: dict[str, tuple[Any, ...]] = {"width": (32, 64), "depth": (2, 3), "norm": ("instancenorm", "batchnorm"),
                                            "pool": ("avgpooling", "maxpooling")}
GRID_KEYS = ("width", "depth", "norm", "act", "pool")


def architectures(grid: dict[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's ConvNet options (``width depth norm act pool``), each checked."""
    from ..models.convnet import ACTS, NORMS, POOLS

    bad = sorted(set(grid) - set(GRID_KEYS))
    if bad:
        raise StudyError(f"unknown architecture option(s) {bad}; valid: {', '.join(GRID_KEYS)}")
    valid = {"norm": NORMS, "act": ACTS, "pool": POOLS}
    for key, values in grid.items():
        if not values:
            raise StudyError(f"--{key}: give at least one value")
        for v in values:
            if key in valid and v not in valid[key]:
                raise StudyError(f"unknown ConvNet {key} {v!r}; valid: {', '.join(valid[key])}")
            if key in ("width", "depth") and (not isinstance(v, int) or v < 1):
                raise StudyError(f"--{key}: give integers >= 1, got {v!r}")
    keys = list(grid)
    return [dict(zip(keys, vals)) for vals in itertools.product(*(grid[k] for k in keys))]


def arch_name(arch: dict[str, Any]) -> str:
    short = {"instancenorm": "in", "batchnorm": "bn", "layernorm": "ln", "groupnorm": "gn", "none": "no",
             "avgpooling": "ap", "maxpooling": "mp", "relu": "relu", "sigmoid": "sig", "leakyrelu": "lrelu"}
    return "convnet-" + "-".join(f"{k[0]}{v}" if k in ("width", "depth") else short.get(v, str(v))
                                 for k, v in arch.items())


def rank_correlations(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Spearman's rho and Kendall's tau (tau-b: ties counted) between two lists of scores."""
    from scipy.stats import kendalltau, spearmanr

    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"rank correlation needs two lists of equal length >= 2, got {len(a)} and {len(b)}")
    rho, tau = spearmanr(a, b).statistic, kendalltau(a, b).statistic
    return {"spearman": float(rho), "kendall": float(tau)}


def _values(key: str) -> dict[str, Any]:
    """A grid option's field metadata: a comma-separated list on the command line."""
    def parse(text: str) -> tuple[Any, ...]:
        values = [v.strip() for v in text.split(",") if v.strip()]
        if key in ("width", "depth"):
            try:
                return tuple(int(v) for v in values)
            except ValueError:
                raise StudyError(f"--{key} {text!r}: give integers, e.g. 32,64") from None
        return tuple(values)

    default = ", ".join(map(str, DEFAULT_GRID.get(key, ()))) or "the model's own"
    return {"parse": parse, "metavar": "A,B", "help": f"ConvNet {key} values, comma-separated (default {default})"}


@dataclass(frozen=True)
class NASConfig:
    dataset: str = field(metadata={"help": "the dataset (of the sets, when files are given)"})
    sets: tuple[SetSource, ...] = field(default=(), metadata=SETS_FIELD)
    width: tuple[int, ...] = field(default=DEFAULT_GRID["width"], metadata=_values("width"))
    depth: tuple[int, ...] = field(default=DEFAULT_GRID["depth"], metadata=_values("depth"))
    norm: tuple[str, ...] = field(default=DEFAULT_GRID["norm"], metadata=_values("norm"))
    act: tuple[str, ...] = field(default=(), metadata=_values("act"))  # empty: not varied (the model's own)
    pool: tuple[str, ...] = field(default=DEFAULT_GRID["pool"], metadata=_values("pool"))
    per_class: int | None = field(default=None, metadata={"help": "K images per class (default: the sets' own)"})
    random: bool = field(default=True, metadata={"help": "the random baseline (real images drawn per class)"})
    protocol: EvalProtocol = field(default_factory=lambda: get_protocol("dc", n_models=1), metadata={
        "protocol": "dc", "n_models": 1})  # training on a proxy set
    full_epochs: int = field(default=20, metadata={"help": "epochs of the whole-data training (default 20)"})
    full_models: int = field(default=2, metadata={
        "help": "whole-data networks per architecture, seeds 0.. (default 2: the reference's agreement with itself "
                "is measured; 1 skips it)"})
    reference: str | None = field(default=None, metadata={
        "metavar": "DIR", "help": "reuse the whole-data trainings of the NAS folder DIR (same dataset, grid, "
                                  "--full-epochs, --full-models and protocol; any --per-class): new proxies "
                                  "against a reference already trained"})
    root: str | None = None
    device: str = "cpu"

    @property
    def grid(self) -> dict[str, tuple[Any, ...]]:
        """The architecture options varied, in `GRID_KEYS` order."""
        return {k: getattr(self, k) for k in GRID_KEYS if getattr(self, k)}

    @property
    def full_protocol(self) -> EvalProtocol:
        """The whole data's training: the proxies' protocol for ``full_epochs`` and ``full_models`` (at the
        protocol's lr: the whole data has no learned one, so ``use_learned_lr`` does not change it)."""
        return self.protocol.with_(epochs=self.full_epochs, n_models=self.full_models, use_learned_lr=False)


def nas_job(job: dict[str, Any]) -> dict[str, Any]:
    """One architecture trained on one set (or the whole training set): its row."""
    source = SetSource(**job["set"])
    f, data = data_for(source, job["dataset"], job["root"], job["device"])
    spec, arch = data.spec, job["arch"]
    if source.name == FULL:
        trainset = RealSet(data.train)
    elif f is None:
        trainset = random_memory(data.train, range(spec.num_classes), job["per_class"], seed=0)
    else:
        trainset = file_memory(f, range(spec.num_classes), job["per_class"])

    def network(i: int, model: str):
        return create_model("convnet", spec.channels, spec.num_classes, spec.image_size, seed=protocol.seed * 1000 + i,
                            weight_init=protocol.weight_init, **arch)

    protocol = EvalProtocol.from_dict(job["protocol"])
    t0 = time.perf_counter()
    rep = evaluate(trainset, data, protocol, device=job["device"], networks=network, indices=[job["model"]])
    return {"set": source.name, "file": source.path, "dataset": job["dataset"], "arch": arch_name(arch),
            "options": arch, "model": job["model"], "accuracy": 100 * rep.accuracies[0],
            "seconds": time.perf_counter() - t0, "train_images": len(trainset) if source.name != FULL
            else len(data.train), "epochs": protocol.schedule.epochs, "protocol": protocol.name, "commit": git_commit()}


@STUDIES.register("nas")
class NAS(Study):
    """Rank a grid of ConvNets by training on each set against the whole data."""

    name = "nas"
    config = NASConfig
    what = "architecture-search folder"
    help = ("rank a grid of ConvNets by training on each set against the whole data (Spearman, Kendall, time "
            "saved); resumable")
    figure = "nas.png"

    def check(self, cfg: NASConfig) -> dict[str, Any]:
        if len(architectures(cfg.grid)) < 2:
            raise StudyError("a ranking needs at least two architectures; widen the grid")
        check_datasets(cfg.sets, cfg.dataset)
        ipcs = {s.name: file_ipc(s.path) for s in cfg.sets}
        k = cfg.per_class or (min(ipcs.values()) if ipcs else None)
        if k is None:
            raise StudyError("without a set file, give --per-class K for the random baseline")
        if any(i < k for i in ipcs.values()):
            raise StudyError(f"--per-class {k}: some sets hold fewer images per class: {ipcs}")
        if cfg.reference is not None and not (Path(cfg.reference) / JOBS).is_dir():
            raise StudyError(f"--reference {cfg.reference}: not a NAS study's folder (it has no {JOBS}/ of results)")
        return {"per_class": k, "full_protocol": cfg.full_protocol.to_dict()}

    def jobs(self, cfg: NASConfig, out: Path, resolved: dict[str, Any]) -> list[Job]:
        sources = [SetSource(FULL)] + list(cfg.sets) + ([SetSource(RANDOM)] if cfg.random else [])
        jobs = []
        for src in sources:
            protocol = cfg.full_protocol if src.name == FULL else cfg.protocol
            for arch in architectures(cfg.grid):
                for m in range(protocol.n_models):
                    job = {"set": src.to_dict(), "dataset": cfg.dataset, "root": cfg.root, "device": cfg.device,
                           "arch": arch, "model": m, "per_class": resolved["per_class"],
                           "protocol": protocol.to_dict()}
                    jobs.append(Job(job_name(src.name, arch_name(arch), f"model{m}"), job))
        if cfg.reference is not None:
            reuse_reference(Path(cfg.reference), out, [j for j in jobs if j.spec["set"]["name"] == FULL])
        return jobs

    def run(self, job: dict[str, Any]) -> dict[str, Any]:
        return nas_job(job)

    def summarize(self, cfg: NASConfig, rows: list[dict[str, Any]], resolved: dict[str, Any]) -> dict[str, Any]:
        return summarize(rows, [arch_name(a) for a in architectures(cfg.grid)], cfg, resolved["per_class"])

    def format(self, summary: dict[str, Any]) -> str:
        return format_summary(summary)

    def plot(self, summary: dict[str, Any], path: Path) -> Path:
        return plot_nas(summary, path)

    def metrics(self, summary: dict[str, Any]) -> dict[str, Any]:
        """``SET_spearman``, ``SET_kendall``, ``SET_pick_full_acc`` (the whole-data accuracy of the
        proxy's pick) and ``full_seed_spearman``/``full_seed_kendall`` (the reference's seeds against
        each other)."""
        out: dict[str, Any] = {}
        for name, s in summary["sets"].items():
            out.update({f"{name}_spearman": round(s["spearman"], 4), f"{name}_kendall": round(s["kendall"], 4),
                        f"{name}_pick_full_acc": s["top1_full_acc"]})
        if "seed_spearman" in summary["full"]:
            out.update(full_seed_spearman=summary["full"]["seed_spearman"],
                       full_seed_kendall=summary["full"]["seed_kendall"])
        return out


# A whole-data job's spec carries the study's --per-class (as every job's does), but its training never
# reads it: a reference made for sets of another size is reused, its copy naming this study's.
FULL_UNUSED = ("per_class",)


def reuse_reference(ref: Path, out: Path, full: list[Job]) -> None:
    """Copy the whole-data results of the NAS folder ``ref`` into ``out`` (those ``out`` lacks), each
    checked to have been trained with this study's settings for that job: a reference trained otherwise,
    or not finished, is an error that names what differs, never a silent reuse. A result whose settings
    differ only in what the whole data's training does not read (``FULL_UNUSED``) is copied with this
    study's values there, and ``reference`` naming the file it came from."""
    if ref.resolve() == out.resolve():
        return
    todo = [j for j in full if not (out / JOBS / f"{j.name}.json").exists()]
    missing = [j.name for j in todo if not (ref / JOBS / f"{j.name}.json").is_file()]
    if missing:
        raise StudyError(f"--reference {ref}: it lacks {len(missing)} of the {len(full)} whole-data results this "
                         f"study needs (e.g. {missing[0]}); finish it first (run its study again), or check that "
                         "the grid, --full-models and --full-epochs are its own")
    restate = set()  # the jobs whose result differs from this study's settings in FULL_UNUSED only
    for j in todo:
        diff = settings_diff(ref / JOBS / f"{j.name}.json", j.spec)
        other = [k for k in diff if k not in FULL_UNUSED]
        if other:
            raise StudyError(f"--reference {ref}: {j.name} was trained with other settings ({', '.join(other)}); "
                             "a reference is reused only with its own dataset, grid, --full-epochs, "
                             "--full-models and protocol")
        if diff:
            restate.add(j.name)
    (out / JOBS).mkdir(parents=True, exist_ok=True)
    for j in todo:
        src = ref / JOBS / f"{j.name}.json"
        text = src.read_text()
        if j.name in restate:
            row = json.loads(text)
            row["settings"] = settings_of(j.spec)
            row["reference"] = str(src)
            text = json.dumps(row)
        atomic_write_text(out / JOBS / f"{j.name}.json", text)


def summarize(rows: list[dict[str, Any]], names: list[str], cfg: NASConfig, k: int) -> dict[str, Any]:
    """Per set: mean accuracy of each architecture, the correlations with the whole data's, the
    whole-data accuracy of the architecture it ranks first, and its training time."""
    def table(set_name: str) -> tuple[list[float], float]:
        mine = [r for r in rows if r["set"] == set_name]
        accs = [mean_std([r["accuracy"] for r in mine if r["arch"] == n])[0] for n in names]
        return accs, sum(r["seconds"] for r in mine)

    full, full_s = table(FULL)
    best_full = max(full)
    agreement = seed_agreement([r for r in rows if r["set"] == FULL], names)
    sets: dict[str, Any] = {}
    for name in dict.fromkeys(r["set"] for r in rows if r["set"] != FULL):
        accs, secs = table(name)
        pick = max(range(len(names)), key=lambda i: accs[i])
        sets[name] = {"file": next(r["file"] for r in rows if r["set"] == name), **rank_correlations(accs, full),
                      "top1_arch": names[pick], "top1_full_acc": round(full[pick], 2),
                      "top1_gap": round(best_full - full[pick], 2), "seconds": round(secs, 1),
                      "speedup": round(full_s / secs, 1) if secs else None,
                      "accuracies": {n: round(a, 2) for n, a in zip(names, accs)}}
    return {"app": "nas", "dataset": cfg.dataset, "per_class": k, "architectures": names,
            "protocol": cfg.protocol.to_dict(), "full_protocol": cfg.full_protocol.to_dict(),
            "full": {"accuracies": {n: round(a, 2) for n, a in zip(names, full)}, "seconds": round(full_s, 1),
                     "best_arch": names[full.index(best_full)], "best_acc": round(best_full, 2), **agreement},
            "sets": sets}


def seed_agreement(rows: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """How far the whole data's ranking agrees with itself across training seeds: the rank
    correlations of each pair of seeds' accuracies over the architectures (their mean), the seeds'
    count and whether the ranking is `STABLE`. Empty for one seed: nothing to measure."""
    seeds = sorted({r["model"] for r in rows})
    by = {(r["model"], r["arch"]): r["accuracy"] for r in rows}
    runs = [[by[(s, n)] for n in names] for s in seeds if all((s, n) in by for n in names)]
    if len(runs) < 2:
        return {}
    pairs = [rank_correlations(a, b) for a, b in itertools.combinations(runs, 2)]
    rho = sum(p["spearman"] for p in pairs) / len(pairs)
    tau = sum(p["kendall"] for p in pairs) / len(pairs)
    return {"seeds": len(runs), "seed_spearman": round(rho, 4), "seed_kendall": round(tau, 4),
            "stable": bool(rho >= STABLE)}


def _spread(summary: dict[str, Any]) -> float:
    """The whole-data accuracies' range over the architectures (points)."""
    accs = summary["full"]["accuracies"].values()
    return max(accs) - min(accs)


def format_summary(summary: dict[str, Any]) -> str:
    """A Markdown table: per proxy its correlations, its pick and the pick's whole-data accuracy, its
    training time and the time saved; the whole data last."""
    full = summary["full"]
    lines = ["| proxy | Spearman | Kendall | its pick | pick's whole-data acc. (%) | proxy training (s) | time saved |",
             "|---|---|---|---|---|---|---|"]
    for name, s in summary["sets"].items():
        lines.append(f"| {name} | {s['spearman']:.3f} | {s['kendall']:.3f} | {s['top1_arch']} | "
                     f"{s['top1_full_acc']:.2f} | {s['seconds']:.0f} | {s['speedup']:g}x |")
    if "seed_spearman" in full:  # the reference against itself: seed against seed
        lines.append(f"| whole data, seed vs seed ({full['seeds']} seeds) | {full['seed_spearman']:.3f} | "
                     f"{full['seed_kendall']:.3f} | {full['best_arch']} | {full['best_acc']:.2f} | "
                     f"{full['seconds']:.0f} | 1x |")
        if not full["stable"]:
            lines += ["", f"The whole-data ranking is not stable across seeds (Spearman {full['seed_spearman']:.2f} "
                          f"< {STABLE}): the proxies' correlations above measure its noise, not the proxies. "
                          f"Its architectures span {_spread(summary):.2f} points: train the whole data longer "
                          "(--full-epochs) when they are still learning, or, when longer training only brings them "
                          "closer (MNIST's ConvNets end within a few tenths of a point), rank them where they differ "
                          "more: a harder dataset, or a wider grid (--act, --norm, --depth)."]
    else:
        lines.append(f"| whole data | 1 | 1 | {full['best_arch']} | {full['best_acc']:.2f} | {full['seconds']:.0f} | 1x |")
    return "\n".join(lines)


def plot_nas(summary: dict[str, Any], path: Path) -> Path:
    """Proxy accuracy against whole-data accuracy, one panel per proxy set."""
    from ..viz import plt_figure, save_figure

    sets = summary["sets"]
    fig, axes = plt_figure(max(len(sets), 1), size=(4.0, 3.6))
    axes = axes if isinstance(axes, list) else [axes]
    full = summary["full"]["accuracies"]
    for ax, (name, s) in zip(axes, sets.items()):
        xs = [s["accuracies"][n] for n in summary["architectures"]]
        ys = [full[n] for n in summary["architectures"]]
        ax.scatter(xs, ys, s=14)
        ax.set_title(f"{name}: rho {s['spearman']:.2f}, tau {s['kendall']:.2f}", fontsize=9)
        ax.set_xlabel("accuracy after training on the proxy (%)")
        ax.set_ylabel("whole-data accuracy (%)")
    return save_figure(fig, path)
