"""Membership inference: how much a model trained on a distilled set leaks about the real images the
set was made from, beside one trained on a real subset of the same size and one trained on all.

The game. A fixed pool of ``pool`` training images per class is split in two halves at random, per
class, ``splits`` times (the dataset option ``split``, `data.registry.split_indices`). Every
pipeline runs once on each half of each split: it makes its training set from that half only
(``distill``: a method's run on the half, its initial images drawn from it; ``subset``: ``K`` real
images per class of the half; ``all``: the whole half) and trains a target network on it with the
evaluation protocol. The half is the run's *members*, every image of it, so the real images a
distilled set was initialised from are members too; the other half are its non-members. Every run
is also every other run's shadow model, so each pool image has ``splits`` shadows that saw it
(counting the run's own partner) or nearly so, and as many that did not.

The attacks, scored on every pool image for every target run (pooled over the runs):

- loss threshold (Yeom et al. 2018): the lower the target's loss on the image, the likelier a member;
- LiRA (Carlini et al. 2022, the online attack with a global variance, as its paper advises for few
  shadows): the likelihood ratio of the target's logit-scaled confidence
  ``phi = z_y - logsumexp_{j != y} z_j`` under Gaussians fitted to the shadows that saw the image
  and to those that did not.

Reported: ROC AUC and the true-positive rate at 0.1% and 1% false-positive rate, and the same for
the members *nearest* the set's images (the real images a set copies or started from: the
images at risk first). Every run is one job of the study (`studies.run_study`: one executor task
with its result file ``jobs/NAME.json``).
"""

from __future__ import annotations

import shlex
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..evaluation import EvalProtocol, evaluate, get_protocol
from ..evaluation.evaluator import RealSet
from ..version import git_commit
from .base import STUDIES, Job, Study, StudyError, config_dict, config_from_dict, job_name
from .membership import attack, confidences, nearest
from .sets import MemorySet, file_memory, random_memory

SUBSET, ALL, DISTILL = "subset", "all", "distill"


@dataclass(frozen=True)
class Pipeline:
    """How a run makes its training set from its half: ``kind`` distill (``overrides``: a run config's
    ``key=value`` settings, ``preset=NAME`` among them), subset or all."""

    name: str
    kind: str
    overrides: tuple[str, ...] = ()


def parse_pipeline(text: str) -> Pipeline:
    """``"NAME: key=value ..."`` (a distillation: ``preset=dm-cpu``, ``method=dm``, ``iterations=100``,
    ``method_config.lr_img=1`` ...) -> `Pipeline`."""
    name, colon, rest = text.partition(":")
    name = name.strip()
    if not colon or not name or not name.replace("-", "").replace("_", "").isalnum():
        raise StudyError(f"--distill {text!r}: give 'NAME: key=value ...', e.g. 'dm: preset=dm-cpu iterations=100'")
    if name in (SUBSET, ALL):
        raise StudyError(f"--distill {text!r}: {name!r} is a baseline's name; name the distillation otherwise")
    items = tuple(shlex.split(rest))
    bad = [i for i in items if "=" not in i]
    if bad:
        raise StudyError(f"--distill {text!r}: settings are key=value, got {bad}")
    return Pipeline(name, DISTILL, items)


@dataclass(frozen=True)
class PrivacyConfig:
    dataset: str = field(metadata={"help": "the dataset (of the sets, when files are given)"})
    pipelines: tuple[Pipeline, ...] = field(default=(), metadata={
        "flag": "--distill", "many": True, "parse": lambda items: tuple(parse_pipeline(t) for t in items),
        "metavar": "'NAME: key=value ...'",
        "help": "a distillation pipeline run on each half, e.g. 'dm: preset=dm-cpu iterations=100' (repeat)"})
    pool: int = field(default=100, metadata={"help": "images per class in the pool (default 100)"})
    splits: int = field(default=2, metadata={"help": "random halvings of the pool (two runs each; default 2)"})
    per_class: int = field(default=10, metadata={"help": "K of the distilled sets and the real subset (default 10)"})
    protocol: EvalProtocol = field(default_factory=lambda: get_protocol("dc", n_models=1), metadata={
        "protocol": "dc", "n_models": 1})  # the target's training
    experts: int = field(default=2, metadata={"help": "experts per half for trajectory matching (default 2)"})
    root: str | None = None
    device: str = "cpu"


def run_config(p: Pipeline, cfg: PrivacyConfig, split: str, seed: int, experts_dir: str | None) -> dict[str, Any]:
    """The distillation run of pipeline ``p`` on one half (a `RunConfig` dict)."""
    from ..config import apply_overrides, load_preset

    items = list(p.overrides)
    presets = [i.split("=", 1)[1] for i in items if i.startswith("preset=")]
    base: dict[str, Any] = load_preset(presets[-1]) if presets else {}
    base = apply_overrides(base, [i for i in items if not i.startswith("preset=")])
    base.update(dataset=cfg.dataset, dataset_options={**(base.get("dataset_options") or {}), "split": split},
                data_root=cfg.root, seed=seed, device=cfg.device, eval_every=0, models=[])
    if not any(i.startswith("ipc=") for i in items):  # the preset's ipc yields to the comparison's K
        base["ipc"] = cfg.per_class
    # the run's own final evaluation is not the target (that is trained below): keep it minimal
    base["eval"] = {"preset": "smoke", "n_models": 1, "epochs": 1, "model": cfg.protocol.model}
    if experts_dir is not None:
        base["method_config"] = {**(base.get("method_config") or {}), "experts": experts_dir}
    return base


def needs_experts(run: dict[str, Any]) -> int | None:
    """The epochs a trajectory-matching method needs of its experts (None: the method takes none, or
    the run names its own expert folder)."""
    from ..config import from_dict
    from ..methods import METHODS

    entry = METHODS.get(run.get("method") or "dm")
    mc = dict(run.get("method_config") or {})
    if mc.get("experts") or "experts" not in {f.name for f in __import__("dataclasses").fields(entry.config)}:
        return None
    return int(from_dict(entry.config, mc, where="method_config").epochs_needed)


def _train_set(job: dict[str, Any], out: Path):
    """The run's training set and the set file it came from (None for the real baselines)."""
    from ..data import load_dataset
    from ..synset import load_synset

    split, seed = job["split_option"], job["seed"]
    half = load_dataset(job["dataset"], job["root"], split=split)
    kind = job["pipeline"]["kind"]
    if kind == ALL:
        return RealSet(half.train), None
    if kind == SUBSET:
        return random_memory(half.train, range(half.spec.num_classes), job["per_class"], seed=seed), None
    from ..config import RunConfig, from_dict
    from ..engine import run

    p = config_from_dict(Pipeline, job["pipeline"])
    cfg = config_from_dict(PrivacyConfig, {**job["config"], "protocol": job["protocol"]})
    run_dir = out / "runs" / job_name(p.name, split.replace(":", "-"))
    experts_dir = None
    probe_run = run_config(p, cfg, split, seed, None)
    epochs = needs_experts(probe_run)
    if epochs is not None:
        from ..experts import ExpertConfig, train_experts
        from ..resolve import resolve

        experts_dir = str(out / "experts" / split.replace(":", "-"))
        zca = resolve(from_dict(RunConfig, probe_run, where="config")).zca  # the experts see the run's data
        ecfg = ExpertConfig(dataset=job["dataset"], model=(probe_run.get("method_config") or {}).get("model", "convnet"),
                            n_experts=cfg.experts, epochs=epochs, seed=seed, dataset_options={"split": split}, zca=zca)
        train_experts(ecfg, experts_dir, root=job["root"], device=job["device"])
    rc = from_dict(RunConfig, run_config(p, cfg, split, seed, experts_dir), where="config")
    if not (run_dir / "distilled.safetensors").is_file():
        run(rc, run_dir, resume=(run_dir / "config.yaml").is_file(), progress=False, log=lambda *a, **k: None)
    f = load_synset(run_dir / "distilled.safetensors", device=job["device"])
    classes = range(f.spec.num_classes)
    return file_memory(f, classes), f


def privacy_job(job: dict[str, Any]) -> dict[str, Any]:
    """One pipeline's run on one half: the target's outputs on the whole pool."""
    from ..data import load_dataset
    from ..data.registry import parse_split, split_indices
    from ..data.zca import match_whitening

    t0 = time.perf_counter()
    out = Path(job["out"])
    trainset, f = _train_set(job, out)
    data = load_dataset(job["dataset"], job["root"])
    if f is not None and f.zca is not None:
        data = match_whitening(data, f.zca)
    pool_n, split_seed, side = parse_split(job["split_option"])
    pool, *halves = split_indices(data.train.labels, data.spec.num_classes, pool_n, split_seed)
    member = torch.isin(pool, halves[side])
    x_pool, y_pool = data.train.images[pool], data.train.labels[pool]
    protocol = EvalProtocol.from_dict(job["protocol"])
    protocol = protocol.with_(seed=protocol.seed * 1000 + job["seed"], n_models=1)
    rep = evaluate(trainset, data, protocol, device=job["device"], indices=[0],
                   probe=lambda i, net: confidences(net, x_pool.to(job["device"]), y_pool.to(job["device"])))
    phi, loss = rep.extra.pop("probes")[0]
    near = None
    if isinstance(trainset, MemorySet):
        members = pool[member]
        local = nearest(trainset.images.cpu(), data.train.images[members])
        position = {int(p): k for k, p in enumerate(pool.tolist())}
        near = sorted({position[int(members[j])] for j in local})
    row = {"pipeline": job["pipeline"]["name"], "kind": job["pipeline"]["kind"], "dataset": job["dataset"],
           "split": job["split_option"], "test_accuracy": 100 * rep.accuracies[0],
           "train_images": len(trainset) if isinstance(trainset, MemorySet) else len(trainset.data),
           "member": member.int().tolist(), "phi": [round(v, 5) for v in phi], "loss": [round(v, 6) for v in loss],
           "nearest": near, "seconds": time.perf_counter() - t0, "protocol": protocol.name,
           "epochs": protocol.schedule.epochs, "commit": git_commit()}
    return row


@STUDIES.register("privacy")
class Privacy(Study):
    """Membership inference against models trained on distilled sets, a real subset and all the data."""

    name = "privacy"
    config = PrivacyConfig
    what = "privacy folder"
    help = ("membership inference (loss threshold and LiRA) against models trained on distilled sets, a real "
            "subset and all the data; resumable")
    figure = "privacy.png"

    def check(self, cfg: PrivacyConfig) -> dict[str, Any]:
        from ..config import RunConfig, from_dict
        from ..data import load_dataset
        from ..data.registry import parse_split
        from ..resolve import resolve

        check_protocol(cfg.protocol)
        if cfg.splits < 2:
            raise StudyError(f"--splits must be >= 2 (LiRA's shadows are the other runs), got {cfg.splits}")
        if cfg.per_class < 1 or cfg.per_class > cfg.pool // 2:
            raise StudyError(f"--per-class must be between 1 and half the pool ({cfg.pool // 2}), got {cfg.per_class}")
        parse_split(f"{cfg.pool}:0:0")
        spec = load_dataset(cfg.dataset, cfg.root).spec
        load_dataset(cfg.dataset, cfg.root, split=f"{cfg.pool}:0:0")  # a pool larger than a class fails here
        names = [p.name for p in cfg.pipelines]
        if len(set(names)) != len(names):
            raise StudyError(f"pipeline names must be unique, got {names}")
        for p in cfg.pipelines:  # every run config is checked before the first job
            run = run_config(p, cfg, f"{cfg.pool}:0:0", 0, None)
            if needs_experts(run) is not None:
                run = run_config(p, cfg, f"{cfg.pool}:0:0", 0, "experts")
            resolve(from_dict(RunConfig, run, where=f"--distill {p.name}"))
        return {"classes": spec.num_classes}

    def jobs(self, cfg: PrivacyConfig, out: Path, resolved: dict[str, Any]) -> list[Job]:
        config = {k: v for k, v in config_dict(cfg).items() if k not in ("pipelines", "protocol")}
        jobs = []
        for p in self._pipelines(cfg):
            for s in range(cfg.splits):
                for h in (0, 1):
                    split = f"{cfg.pool}:{s}:{h}"
                    job = {"pipeline": asdict(p), "dataset": cfg.dataset, "root": cfg.root, "device": cfg.device,
                           "split_option": split, "seed": 2 * s + h, "per_class": cfg.per_class,
                           "protocol": cfg.protocol.to_dict(), "config": config, "out": str(out)}
                    jobs.append(Job(job_name(p.name, f"split{s}", f"half{h}"), job))
        return jobs

    @staticmethod
    def _pipelines(cfg: PrivacyConfig) -> list[Pipeline]:
        return list(cfg.pipelines) + [Pipeline(SUBSET, SUBSET), Pipeline(ALL, ALL)]

    def run(self, job: dict[str, Any]) -> dict[str, Any]:
        return privacy_job(job)

    def records(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if k not in ("phi", "loss", "member")} for r in rows]

    def summarize(self, cfg: PrivacyConfig, rows: list[dict[str, Any]], resolved: dict[str, Any]) -> dict[str, Any]:
        results = {p.name: attack([r for r in rows if r["pipeline"] == p.name]) for p in self._pipelines(cfg)}
        return {"app": "privacy", "dataset": cfg.dataset, "pool_per_class": cfg.pool, "splits": cfg.splits,
                "per_class": cfg.per_class, "protocol": cfg.protocol.to_dict(), "pool_images": len(rows[0]["phi"]),
                "classes": resolved["classes"], "pipelines": results,
                "seconds": round(sum(r["seconds"] for r in rows), 1)}

    def format(self, summary: dict[str, Any]) -> str:
        return format_summary(summary)

    def plot(self, summary: dict[str, Any], path: Path) -> Path:
        return plot_privacy(summary, path)

    def metrics(self, summary: dict[str, Any]) -> dict[str, Any]:
        """``SET_lira_auc`` and ``SET_lira_tpr1`` (TPR at 1% FPR, %) of each pipeline."""
        out: dict[str, Any] = {}
        for name, p in summary["pipelines"].items():
            out[f"{name}_lira_auc"], out[f"{name}_lira_tpr1"] = p["lira"]["auc"], round(100 * p["lira"]["tpr@1%fpr"], 2)
        return out


def format_summary(summary: dict[str, Any]) -> str:
    """A Markdown table: per training set, both attacks' AUC and true-positive rates, and LiRA on the
    members nearest the set's images."""
    lines = ["| training set | images | test acc. (%) | LiRA AUC | LiRA TPR@0.1% | LiRA TPR@1% | loss AUC | loss TPR@1% "
             "| nearest members: LiRA AUC | TPR@0.1% |", "|" + "---|" * 10]
    for name, p in summary["pipelines"].items():
        near = p.get("lira_nearest")
        nn = f"{near['auc']:.3f} | {100 * near['tpr@0.1%fpr']:.2f}%" if near else "- | -"
        lines.append(f"| {name} | {p['train_images']} | {p['test_accuracy']:.2f} | {p['lira']['auc']:.3f} | "
                     f"{100 * p['lira']['tpr@0.1%fpr']:.2f}% | {100 * p['lira']['tpr@1%fpr']:.2f}% | "
                     f"{p['loss']['auc']:.3f} | {100 * p['loss']['tpr@1%fpr']:.2f}% | {nn} |")
    return "\n".join(lines)


def plot_privacy(summary: dict[str, Any], path: Path) -> Path:
    """LiRA's ROC curve per training set on log-log axes (the low false-positive regime is what matters)."""
    from ..viz import plt_figure, save_figure

    fig, ax = plt_figure(size=(5.0, 4.5))
    for name, r in summary["pipelines"].items():
        roc = r["lira"]["roc"]
        ax.plot(roc["fpr"], [max(t, 1e-4) for t in roc["tpr"]], label=f"{name} (AUC {r['lira']['auc']:.3f})")
    ax.plot([1e-4, 1], [1e-4, 1], "k:", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(1e-4, 1)
    ax.set_ylim(1e-4, 1)
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.set_title(f"LiRA membership inference, {summary['dataset']}")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def check_protocol(protocol: EvalProtocol) -> EvalProtocol:
    if protocol.schedule.mode != "standard":
        raise StudyError("the privacy targets train with the standard schedule (a dc or dsa protocol)")
    return protocol
