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
images at risk first). Every run is one executor task with its result file ``jobs/NAME.json``.
"""

from __future__ import annotations

import json
import math
import shlex
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from ..config import ConfigError
from ..evaluation import EvalProtocol, evaluate
from ..evaluation.evaluator import RealSet
from ..executor import Executor, Task
from ..fileio import atomic_write_text
from ..version import git_commit
from .common import (AppError, MemorySet, check_out, file_memory, job_name, random_memory, run_jobs, settings_of,
                     write_records)

SUBSET, ALL, DISTILL = "subset", "all", "distill"
FPRS = (0.001, 0.01)


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
        raise AppError(f"--distill {text!r}: give 'NAME: key=value ...', e.g. 'dm: preset=dm-cpu iterations=100'")
    if name in (SUBSET, ALL):
        raise AppError(f"--distill {text!r}: {name!r} is a baseline's name; name the distillation otherwise")
    items = tuple(shlex.split(rest))
    bad = [i for i in items if "=" not in i]
    if bad:
        raise AppError(f"--distill {text!r}: settings are key=value, got {bad}")
    return Pipeline(name, DISTILL, items)


@dataclass(frozen=True)
class PrivacyConfig:
    dataset: str
    pipelines: tuple[Pipeline, ...]
    pool: int = 100  # images per class in the pool (half of them members of each run)
    splits: int = 2  # each split gives two runs per pipeline (its two halves)
    per_class: int = 10  # K: images per class of a distilled set and of the real subset
    protocol: EvalProtocol = field(default_factory=lambda: EvalProtocol())  # the target's training
    experts: int = 2  # for a trajectory-matching method: experts trained on each half
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

    p = Pipeline(**{**job["pipeline"], "overrides": tuple(job["pipeline"]["overrides"])})
    cfg = PrivacyConfig(**{**job["config"], "pipelines": (), "protocol": EvalProtocol(**job["protocol"])})
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


@torch.no_grad()
def confidences(net: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int = 500
                ) -> tuple[list[float], list[float]]:
    """Per image: LiRA's logit-scaled confidence ``z_y - logsumexp_{j != y} z_j`` and the loss."""
    net.eval()
    phis, losses = [], []
    for i in range(0, len(images), batch):
        z = net(images[i:i + batch]).float()
        y = labels[i:i + batch]
        zy = z.gather(1, y[:, None]).squeeze(1)
        others = z.scatter(1, y[:, None], float("-inf"))
        phis.append(zy - torch.logsumexp(others, dim=1))
        losses.append(torch.nn.functional.cross_entropy(z, y, reduction="none"))
    net.train()
    return torch.cat(phis).tolist(), torch.cat(losses).tolist()


def nearest(images: torch.Tensor, candidates: torch.Tensor) -> list[int]:
    """For each image, the index of the nearest candidate (Euclidean, in the data's normalisation)."""
    d = torch.cdist(images.flatten(1).float(), candidates.flatten(1).float())
    return d.argmin(1).tolist()


def privacy_job(job: dict[str, Any]) -> bytes:
    """One pipeline's run on one half: the target's outputs on the whole pool (JSON)."""
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
    protocol = EvalProtocol(**job["protocol"])
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
           "epochs": protocol.epochs, "commit": git_commit(), "settings": settings_of(job)}
    return json.dumps(row).encode()


# -- the attacks -----------------------------------------------------------------------------------------
def lira_scores(phi: torch.Tensor, member: torch.Tensor, groups: Sequence[int] | None = None) -> torch.Tensor:
    """Online LiRA with global variances: for each target run ``t`` (a row), the shadows are the runs of
    the *other* groups (``groups[r]``: the split of run ``r``; None: every other run). ``phi`` and
    ``member`` are ``[runs, pool]``; returns ``[runs, pool]`` scores, higher meaning "member".

    The two halves of a split are complementary, so leaving out the target's own split leaves every
    pool image exactly as many shadows that saw it as shadows that did not. That balance matters
    with few shadows: an image with fewer shadows on one side would be scored by the width of that
    side's estimate, not by the target. The spreads are pooled over the pool (residuals from each
    image's means); with one shadow per side they cannot be, and one shared spread is used (the
    score is then the difference of squared distances to the two means)."""
    phi, member = phi.double(), member.bool()
    runs = phi.shape[0]
    groups = list(range(runs)) if groups is None else [int(g) for g in groups]
    scores = torch.empty_like(phi)
    for t in range(runs):
        others = [r for r in range(runs) if groups[r] != groups[t]]
        if len(others) < 2:
            raise AppError("LiRA needs shadows on both sides: at least 2 splits (each target's shadows are the runs "
                           "of the other splits)")
        p, m = phi[others], member[others]
        n_in, n_out = m.sum(0), (~m).sum(0)
        mu_in = (p * m).sum(0) / n_in.clamp(min=1)
        mu_out = (p * ~m).sum(0) / n_out.clamp(min=1)
        res_in = (p - mu_in)[m & (n_in > 1)]
        res_out = (p - mu_out)[~m & (n_out > 1)]
        if res_in.numel() > 1 and res_out.numel() > 1:
            sd_in, sd_out = max(float(res_in.std()), 1e-6), max(float(res_out.std()), 1e-6)
        else:
            sd_in = sd_out = 1.0
        x = phi[t]
        online = (-0.5 * ((x - mu_in) / sd_in) ** 2 - math.log(sd_in)) - (-0.5 * ((x - mu_out) / sd_out) ** 2
                                                                          - math.log(sd_out))
        offline = (x - mu_out) / sd_out  # an image no shadow saw (or all did): the one-sided test
        scores[t] = torch.where((n_in > 0) & (n_out > 0), online, offline)
    return scores


def roc_metrics(scores: Sequence[float] | torch.Tensor, labels: Sequence[int] | torch.Tensor,
                fprs: Sequence[float] = FPRS) -> dict[str, float]:
    """ROC AUC and the true-positive rate at each false-positive rate of ``fprs`` (the highest TPR at
    a threshold whose FPR does not exceed it) of scores where higher means "member"."""
    from sklearn.metrics import roc_auc_score, roc_curve

    s = torch.as_tensor(scores, dtype=torch.float64).numpy()
    y = torch.as_tensor(labels).int().numpy()
    if y.min() == y.max():
        raise ValueError("roc_metrics needs members and non-members")
    fpr, tpr, _ = roc_curve(y, s)
    out = {"auc": float(roc_auc_score(y, s)), "members": int(y.sum()), "non_members": int((1 - y).sum())}
    for a in fprs:
        ok = fpr <= a
        out[f"tpr@{100 * a:g}%fpr"] = float(tpr[ok].max()) if ok.any() else 0.0
    return out


def attack(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Both attacks on one pipeline's runs, pooled over the targets; the same against the nearest
    members only (the non-members all kept)."""
    phi = torch.tensor([r["phi"] for r in rows])
    loss = torch.tensor([r["loss"] for r in rows])
    member = torch.tensor([r["member"] for r in rows]).bool()
    lira = lira_scores(phi, member, [run_group(r) for r in rows])
    out: dict[str, Any] = {"runs": len(rows), "test_accuracy": sum(r["test_accuracy"] for r in rows) / len(rows),
                           "train_images": rows[0]["train_images"]}
    for name, score in (("loss", -loss), ("lira", lira)):
        out[name] = _rounded(roc_metrics(score.flatten(), member.flatten()))
        out[name]["roc"] = roc_points(score.flatten(), member.flatten())
    if all(r["nearest"] for r in rows):
        near = torch.zeros_like(member)
        for i, r in enumerate(rows):
            near[i, r["nearest"]] = True
        keep = near | ~member
        for name, score in (("loss", -loss), ("lira", lira)):
            out[f"{name}_nearest"] = _rounded(roc_metrics(score[keep], member[keep]))
    return out


ROC_FPRS = [round(10 ** (-4 + 4 * i / 32), 6) for i in range(33)]  # 1e-4 .. 1, log-spaced


def roc_points(scores: torch.Tensor, labels: torch.Tensor) -> dict[str, list[float]]:
    """The ROC curve at log-spaced false-positive rates (what the plot draws, kept in the summary)."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(labels.int().numpy(), scores.double().numpy())
    return {"fpr": ROC_FPRS, "tpr": [round(float(tpr[fpr <= a].max()) if (fpr <= a).any() else 0.0, 5)
                                     for a in ROC_FPRS]}


def run_group(row: dict[str, Any]) -> int:
    """The split a run's half belongs to (its LiRA group)."""
    return int(row["split"].split(":")[1])


def _rounded(d: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in d.items()}


def privacy(cfg: PrivacyConfig, out: str | Path, executor: Executor) -> dict[str, Any]:
    """Run (or resume) every pipeline on every half; returns the summary (also ``out/summary.json``)."""
    from ..data import load_dataset
    from ..data.registry import parse_split

    out = check_out(out, "privacy folder")
    if cfg.splits < 2:
        raise AppError(f"--splits must be >= 2 (LiRA's shadows are the other runs), got {cfg.splits}")
    if cfg.per_class < 1 or cfg.per_class > cfg.pool // 2:
        raise AppError(f"--per-class must be between 1 and half the pool ({cfg.pool // 2}), got {cfg.per_class}")
    parse_split(f"{cfg.pool}:0:0")
    data = load_dataset(cfg.dataset, cfg.root)
    load_dataset(cfg.dataset, cfg.root, split=f"{cfg.pool}:0:0")  # a pool larger than a class fails here
    names = [p.name for p in cfg.pipelines]
    if len(set(names)) != len(names):
        raise AppError(f"pipeline names must be unique, got {names}")
    for p in cfg.pipelines:  # every run config is checked before the first job
        from ..config import RunConfig, from_dict
        from ..resolve import resolve

        run = run_config(p, cfg, f"{cfg.pool}:0:0", 0, None)
        if needs_experts(run) is not None:
            run = run_config(p, cfg, f"{cfg.pool}:0:0", 0, str(out / "experts"))
        resolve(from_dict(RunConfig, run, where=f"--distill {p.name}"))
    pipelines = list(cfg.pipelines) + [Pipeline(SUBSET, SUBSET), Pipeline(ALL, ALL)]
    config = {k: v for k, v in asdict(cfg).items() if k not in ("pipelines", "protocol")}
    tasks = []
    for p in pipelines:
        for s in range(cfg.splits):
            for h in (0, 1):
                split = f"{cfg.pool}:{s}:{h}"
                job = {"pipeline": asdict(p), "dataset": cfg.dataset, "root": cfg.root, "device": cfg.device,
                       "split_option": split, "seed": 2 * s + h, "per_class": cfg.per_class,
                       "protocol": cfg.protocol.to_dict(), "config": config, "out": str(out)}
                name = job_name(p.name, f"split{s}", f"half{h}")
                tasks.append(Task(key=name, fn=privacy_job, args=(job,), out=out / "jobs" / f"{name}.json"))
    atomic_write_text(out / "config.json", json.dumps({**config, "pipelines": [asdict(p) for p in cfg.pipelines],
                                                       "protocol": cfg.protocol.to_dict()}, indent=1) + "\n")
    rows = run_jobs(executor, out, tasks, "privacy")
    write_records(out, [{k: v for k, v in r.items() if k not in ("phi", "loss", "member")} for r in rows])
    results = {p.name: attack([r for r in rows if r["pipeline"] == p.name]) for p in pipelines}
    summary = {"app": "privacy", "dataset": cfg.dataset, "pool_per_class": cfg.pool, "splits": cfg.splits,
               "per_class": cfg.per_class, "protocol": cfg.protocol.to_dict(), "pool_images": len(rows[0]["phi"]),
               "classes": data.spec.num_classes, "pipelines": results,
               "seconds": round(sum(r["seconds"] for r in rows), 1)}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    atomic_write_text(out / "summary.md", format_summary(summary) + "\n")
    plot_privacy(summary, out / "privacy.png")
    return summary


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
    if protocol.schedule != "standard":
        raise ConfigError("the privacy targets train with the standard schedule (a dc or dsa protocol)")
    return protocol
