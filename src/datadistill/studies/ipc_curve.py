"""Accuracy against images per class: the random-subset baseline's curve, the floor a distilled set
of each size has to clear (the papers' "random" rows, at every budget at once).

For each ``ipc``, ``ipc`` real training images of each class are drawn once (`sets.random_memory`,
seed 0, a generator per class) and ``protocol.n_models`` fresh networks train on them; each (ipc,
network) is one job. The spread is over networks on one draw, not over draws. The summary
gives the mean +- std test accuracy per ipc, ``ipc_curve.png`` the curve.

This module is also the example of a study in docs/studies.md: one file, nothing edited elsewhere.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..evaluation import EvalProtocol, evaluate, get_protocol
from ..version import git_commit
from .base import STUDIES, Job, Study, StudyError, mean_std


@dataclass(frozen=True)
class IPCCurveConfig:
    dataset: str = field(metadata={"help": "the dataset"})
    ipcs: tuple[int, ...] = field(default=(1, 10, 50), metadata={"help": "images per class, comma-separated "
                                                                          "(default 1,10,50)"})
    protocol: EvalProtocol = field(default_factory=lambda: get_protocol("dc", n_models=2),
                                   metadata={"protocol": "dc", "n_models": 2})
    root: str | None = None
    device: str = "cpu"


@STUDIES.register("ipc-curve")
class IPCCurve(Study):
    name = "ipc-curve"
    config = IPCCurveConfig
    what = "ipc-curve folder"
    help = "test accuracy of random real subsets against images per class (the baseline's curve); resumable"
    figure = "ipc_curve.png"

    def check(self, cfg: IPCCurveConfig) -> dict[str, Any]:
        if not cfg.ipcs or min(cfg.ipcs) < 1 or len(set(cfg.ipcs)) != len(cfg.ipcs):
            raise StudyError(f"--ipcs must be distinct integers >= 1, got {list(cfg.ipcs)}")
        return {}

    def jobs(self, cfg: IPCCurveConfig, out: Path, resolved: dict[str, Any]) -> list[Job]:
        return [Job(f"ipc{k}-model{m}", {"dataset": cfg.dataset, "root": cfg.root, "device": cfg.device, "ipc": k,
                                         "model": m, "protocol": cfg.protocol.to_dict()})
                for k in cfg.ipcs for m in range(cfg.protocol.n_models)]

    def run(self, job: dict[str, Any]) -> dict[str, Any]:
        from ..data import load_dataset
        from .sets import random_memory

        data = load_dataset(job["dataset"], job["root"])
        subset = random_memory(data.train, range(data.spec.num_classes), job["ipc"], seed=0)
        t0 = time.perf_counter()
        rep = evaluate(subset, data, EvalProtocol.from_dict(job["protocol"]), device=job["device"],
                       indices=[job["model"]])
        return {"ipc": job["ipc"], "model": job["model"], "seed": rep.seeds[0], "accuracy": 100 * rep.accuracies[0],
                "protocol": rep.protocol.name, "epochs": rep.protocol.schedule.epochs,
                "seconds": time.perf_counter() - t0, "commit": git_commit()}

    def summarize(self, cfg: IPCCurveConfig, rows: list[dict[str, Any]], resolved: dict[str, Any]) -> dict[str, Any]:
        points = []
        for k in cfg.ipcs:
            m, s = mean_std([r["accuracy"] for r in rows if r["ipc"] == k])
            points.append({"ipc": k, "acc_mean": round(m, 2), "acc_std": round(s, 2),
                           "n": sum(r["ipc"] == k for r in rows)})
        return {"study": self.name, "dataset": cfg.dataset, "protocol": cfg.protocol.to_dict(), "points": points}

    def format(self, summary: dict[str, Any]) -> str:
        lines = ["| images per class | test accuracy (%) | networks |", "|---|---|---|"]
        lines += [f"| {p['ipc']} | {p['acc_mean']:.2f} ± {p['acc_std']:.2f} | {p['n']} |" for p in summary["points"]]
        return "\n".join(lines)

    def metrics(self, summary: dict[str, Any]) -> dict[str, Any]:
        """``ipcK_acc``: the mean test accuracy at K images per class."""
        return {f"ipc{p['ipc']}_acc": p["acc_mean"] for p in summary["points"]}

    def plot(self, summary: dict[str, Any], path: Path) -> Path:
        from ..viz import plt_figure, save_figure

        fig, ax = plt_figure()
        pts = summary["points"]
        ax.errorbar([p["ipc"] for p in pts], [p["acc_mean"] for p in pts], yerr=[p["acc_std"] for p in pts],
                    marker="o", capsize=3, label="random real subset")
        ax.set_xscale("log")
        ax.set_xticks([p["ipc"] for p in pts], [str(p["ipc"]) for p in pts])
        ax.minorticks_off()
        ax.set_xlabel("images per class")
        ax.set_ylabel("test accuracy (%)")
        pr = summary["protocol"]
        ax.set_title(f"{summary['dataset']}: protocol {pr['name']}, {pr['epochs']} epochs", fontsize=10)
        ax.legend()
        return save_figure(fig, path)
