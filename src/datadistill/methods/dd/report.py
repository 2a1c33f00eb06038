"""What DD reports beyond accuracy, and how a DD file is evaluated again.

The pretrained settings (adaptation, poisoning; Wang et al. 2018, Sections 3.5-3.6) are judged by
the evaluation networks' test metrics before and after training on the distilled steps
(`before_after`); `format_metrics` shows them, and `from_file` rebuilds a file's whole evaluation
(networks, protocol, these metrics) from its metadata for ``datadistill evaluate FILE``.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from ...data.spec import LoadedDataset
from ...train import replay_steps
from ..base import FileEvaluation
from ..base import format_metrics as plain_format_metrics
from .networks import networks_from_meta

TITLE = "before/after the distilled steps"


def before_after(synset: Any, data: LoadedDataset, nets: Callable[[int, str], nn.Module], *,
                 poison: tuple[int, int] | None = None, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Test metrics of each evaluation network before and after the distilled steps.

    Always ``acc`` (all test images); with ``poison=(K, T)`` also ``attack_success`` (percent of
    class-K test images predicted as T) and ``other_acc`` (accuracy on the other classes).
    Returns per-network lists and their mean/std, in percent.
    """
    test = data.test.to(device)
    n = len(nets) if hasattr(nets, "__len__") else 1
    with torch.no_grad():
        steps = [(x.detach().to(device), y.to(device), lr.detach()) for x, y, lr in synset.schedule()]
    rows: dict[str, list[float]] = {}
    for i in range(n):
        net = nets(i, nets.model).to(device)
        for phase in ("before", "after"):
            if phase == "after":
                replay_steps(net, steps, device)
            for k, v in _test_metrics(net, test, poison).items():
                rows.setdefault(f"{k}_{phase}", []).append(v)
    out: dict[str, Any] = {"n_networks": n}
    for k, vals in rows.items():
        t = torch.tensor(vals, dtype=torch.float64)
        out[k] = {"mean": float(t.mean()), "std": float(t.std(unbiased=False)), "values": vals}
    return out


@torch.no_grad()
def _test_metrics(net: nn.Module, test, poison: tuple[int, int] | None) -> dict[str, float]:
    net.eval()
    preds = torch.cat([net(test.images[i : i + 1000]).argmax(1) for i in range(0, len(test), 1000)])
    y = test.labels
    out = {"acc": 100 * float((preds == y).float().mean())}
    if poison is not None:
        k, t = poison
        attack, other = y == k, y != k
        out["attack_success"] = 100 * float((preds[attack] == t).float().mean())
        out["other_acc"] = 100 * float((preds[other] == y[other]).float().mean())
    net.train()
    return out


def format_metrics(metrics: dict[str, Any], *, markdown: bool = False) -> list[str]:
    """`before_after`'s means and stds: one console line (``before/after the distilled steps:
    acc_before 98.50 ± 0.20, ...``), or a table for ``report.md``."""
    rows = {k: v for k, v in metrics.items() if isinstance(v, dict)}
    n = metrics.get("n_networks", "?")
    title = f"{TITLE} ({n} evaluation networks, percent)" if markdown else TITLE
    return plain_format_metrics(rows, markdown=markdown, title=title)


def format_before_after(metrics: dict[str, Any]) -> str:
    """One line of `before_after`'s means and stds, e.g. ``acc_before 98.50 ± 0.20, ...``."""
    return format_metrics(metrics)[0].removeprefix(f"{TITLE}: ")


def poison_of(meta: dict[str, Any]) -> tuple[int, int] | None:
    p = meta.get("poison")
    return (p["attack_class"], p["target_class"]) if p else None


def from_file(meta: dict[str, Any], spec) -> FileEvaluation:
    """The DD entry's ``from_file`` hook: replay the steps (preset ``dd``) on the networks the file
    was distilled for, Xavier or whichever distribution it records, and for the pretrained settings
    report `before_after` as well."""
    nets = networks_from_meta(meta, spec)
    info = meta.get("net_init") or {}
    protocol = {"weight_init": info["weight_init"]} if "weight_init" in info else {}
    final = None
    if info.get("setting", "").startswith("pretrained") and nets is not None:
        def final(synset: Any, data: LoadedDataset, device: torch.device) -> dict[str, Any]:
            return before_after(synset, data, nets, device=device, poison=poison_of(meta))

    return FileEvaluation(preset="dd", networks=nets, protocol=protocol, final_metrics=final,
                          format_metrics=format_metrics)
