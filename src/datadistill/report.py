"""``report.md`` of a run: what ran, how long, the evaluation table and the method's own final
metrics (shown by the method's ``format_metrics`` hook), above the grid and the loss curve."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .evaluation import format_table
from .resolve import Resolved

if TYPE_CHECKING:
    from .engine import RunResult


def run_report(res: Resolved, r: "RunResult") -> str:
    cfg = res.cfg
    lines = [
        f"# {res.entry.name} on {cfg.dataset}, {cfg.ipc} image(s) per class",
        "",
        f"- iterations: {res.iterations} ({r.seconds_per_iteration:.3f} s per iteration on {r.device})",
        f"- initialization: {res.image_init}, seed {cfg.seed}",
        *([f"- ZCA whitening, regularization {res.zca:g} (grid shown un-whitened)"] if res.zca is not None else []),
        f"- evaluation: protocol `{res.protocol.name}` ({res.protocol.schedule.epochs} epochs, "
        f"augment {res.protocol.augment.name}, "
        f"{res.protocol.n_models} models, final test accuracy)",
        f"- peak memory: {r.peak_mem_mb:.0f} MB",
        "",
        format_table(r.reports),
        "",
        *(res.entry.format_metrics(r.extra, markdown=True) if r.extra else []),
        "![distilled images](grid.png)",
        "",
        "![loss](loss.png)",
        "",
    ]
    return "\n".join(lines)
