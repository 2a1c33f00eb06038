"""FTD's sharpness-aware step for training experts (GSAM, adaptive).

Du, Jiang, Tan, Zhou, Li, "Minimizing the Accumulated Trajectory Error to Improve Dataset
Distillation", CVPR 2023 (arXiv 2211.11004): experts trained to flat minima give trajectories a
distilled set can follow with less accumulated error. Reference code: ``buffer/buffer_FTD.py`` and
``buffer/gsam/`` of AngusDujw/FTD-distillation, copied into NUS-HPC-AI-Lab/DATM, whose README trains
DATM's experts with ``--rho_max 0.01 --rho_min 0.01 --alpha 0.3`` (``adaptive`` is always on there:
an argparse ``type=bool`` flag defaulting to True). The optimizer is GSAM (Zhuang et al., "Surrogate
Gap Guided Sharpness-Aware Minimization", ICLR 2022) with ASAM's adaptive ascent (Kwon et al., 2021).

One step on one (already augmented) batch, weights ``w``, gradient ``g = grad L(w)``:

1. ascend: ``e = rho * T^2 g / ||T g||`` with ``T = |w|`` (adaptive) or ``T = 1``;
2. ``g' = grad L(w + e)`` on the same batch (BatchNorm running statistics left as they were);
3. ``g_perp = g - (<g, g'> / ||g'||^2) g'``, the part of ``g`` orthogonal to ``g'``;
4. the optimizer steps from ``w`` with ``g' - alpha * g_perp`` (its own lr, momentum, weight decay).

The reference's ``rho`` follows the lr through a ``ProportionScheduler`` whose bounds are equal in
every command it ships, and its lr is constant (``StepLR`` with gamma 1): ``rho`` is a constant here.
Two details differ at float rounding only: the reference guards its divisions by adding 1e-12 and
returns to ``w`` by subtracting ``e``; here a zero norm is guarded by a floor and ``w`` is restored
from a copy. So with ``rho = 0`` the step *is* plain SGD, bit for bit (``e = 0``, ``g' = g``,
``g_perp = 0``), which a test pins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

_TINY = 1e-30  # floor of a squared norm (a guard against 0 / 0 only; real norms are far above it)


@dataclass(frozen=True)
class SharpnessAware:
    """FTD's GSAM settings: ascent radius ``rho``, weight ``alpha`` of the orthogonal correction,
    ``adaptive`` (ASAM's ``|w|`` scaling of the ascent)."""

    rho: float
    alpha: float = 0.3
    adaptive: bool = True


def _sum_dot(a: list[Tensor], b: list[Tensor]) -> Tensor:
    return torch.stack([(x * y).sum() for x, y in zip(a, b)]).sum()


def sharpness_aware_grads(model: nn.Module, backward: Callable[[], Tensor], sam: SharpnessAware) -> Tensor:
    """Leave GSAM's update direction in the ``.grad`` of ``model``'s parameters (which must hold no
    gradient yet) and return the loss at the current weights. ``backward()`` computes the batch's
    loss, back-propagates it into ``.grad`` and returns the detached loss; it is called twice."""
    params = [p for p in model.parameters() if p.requires_grad]
    loss = backward()
    live = [p for p in params if p.grad is not None]
    with torch.no_grad():
        g = [p.grad for p in live]
        w = [p.detach().clone() for p in live]
        scaled = [x.abs() * gi for x, gi in zip(w, g)] if sam.adaptive else g
        scale = sam.rho / _sum_dot(scaled, scaled).clamp_min(_TINY).sqrt()
        for p, x, gi in zip(live, w, g):
            p.add_(gi * scale * (x * x if sam.adaptive else 1.0))
        for p in live:
            p.grad = None
    bn = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bn]
    for m in bn:  # the second pass must not move the running statistics (the reference: momentum 0)
        m.momentum = 0.0
    try:
        backward()
    finally:
        for m, mom in zip(bn, momenta):
            m.momentum = mom
    with torch.no_grad():
        g2 = [p.grad if p.grad is not None else torch.zeros_like(p) for p in live]
        coef = _sum_dot(g, g2) / _sum_dot(g2, g2).clamp_min(_TINY)
        for p, x, gi, gj in zip(live, w, g, g2):
            p.copy_(x)
            p.grad = gj - sam.alpha * (gi - coef * gj)
    return loss
