"""Gradient-matching distances of Dataset Condensation (Zhao, Mopuri, Bilen, ICLR 2021).

Gradients come as lists of tensors, one per parameter, each ``[C, *param_shape]``: the per-class
gradients of the classification loss for all ``C`` classes at once (from ``torch.func.vmap``).
Every function returns the distance summed over classes.

* ``ours`` (the paper's layer-wise distance, Eq. 7): each weight's gradient is viewed as
  ``[out, -1]`` (one row per output unit) and the distance is ``sum over rows of
  1 - cos(g_real_row, g_syn_row)``, summed over layers. Biases (1-d parameters) are skipped, as in
  the reference code: one number per unit carries no direction.
* ``mse``: squared Euclidean distance between the gradients, summed over layers.
* ``cos``: ``1 - cos`` of all layers' gradients flattened and concatenated.

The cosine denominators get ``+1e-6`` as the reference's.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

METRICS = ("ours", "mse", "cos")
EPS = 1e-6


def _rows(g: Tensor) -> Tensor:
    """``[C, out, ...] -> [C, out, -1]``: one row per output unit."""
    return g.reshape(g.shape[0], g.shape[1], -1)


def layerwise_distance(g_real: Sequence[Tensor], g_syn: Sequence[Tensor]) -> Tensor:
    total = g_syn[0].new_zeros(())
    for r, s in zip(g_real, g_syn):
        if r.ndim <= 2:  # [C, n]: a bias (or a norm's scale/shift); skipped as in the paper's code
            continue
        r, s = _rows(r), _rows(s)
        cos = (r * s).sum(-1) / (r.norm(dim=-1) * s.norm(dim=-1) + EPS)
        total = total + (1 - cos).sum()
    return total


def mse_distance(g_real: Sequence[Tensor], g_syn: Sequence[Tensor]) -> Tensor:
    return sum(((s - r) ** 2).sum() for r, s in zip(g_real, g_syn))  # type: ignore[return-value]


def cos_distance(g_real: Sequence[Tensor], g_syn: Sequence[Tensor]) -> Tensor:
    r = torch.cat([g.reshape(g.shape[0], -1) for g in g_real], dim=1)
    s = torch.cat([g.reshape(g.shape[0], -1) for g in g_syn], dim=1)
    return (1 - (r * s).sum(1) / (r.norm(dim=1) * s.norm(dim=1) + EPS)).sum()


def gradient_distance(g_real: Sequence[Tensor], g_syn: Sequence[Tensor], metric: str = "ours") -> Tensor:
    """Distance between per-class real and synthetic gradients, summed over classes."""
    if len(g_real) != len(g_syn):
        raise ValueError(f"{len(g_real)} real gradients but {len(g_syn)} synthetic ones")
    if metric == "ours":
        return layerwise_distance(g_real, g_syn)
    if metric == "mse":
        return mse_distance(g_real, g_syn)
    if metric == "cos":
        return cos_distance(g_real, g_syn)
    raise ValueError(f"unknown gradient distance {metric!r}; valid: {', '.join(METRICS)}")
