"""FRePo's evaluation-time augmentation (Zhou et al., NeurIPS 2022; reference code yongchao97/FRePo,
``get_aug_by_name`` of its vendored ``augmax``).

Each batch takes **one** op, drawn uniformly from the strategy (``color_crop_rotate_translate_cutout``,
with ``flip`` in front where the dataset flips), with parameters drawn per sample:

- ``color``: add ``U(-0.25, 0.25)``; scale about the image's mean by ``exp(U(-0.25, 0.25))``
  (contrast); scale each pixel's channels about their mean by ``exp(U(-0.25, 0.25))`` (saturation),
  in that order (``NormalizedColorJitter(0.25, 0.25, 0.25, p=1)``);
- ``crop``: zoom by ``z = exp(U(log 0.8, log 1.25))`` about a centre offset ``U(-l, l)`` per axis,
  ``l = |size * z - size| / 2`` (``RandomSizedCrop(zoom_range=(0.8, 1.25))`` at the image's size);
- ``rotate``: an angle ``U(-15, 15)`` degrees; ``translate``: a shift ``U(-size/8, size/8)`` pixels
  per axis (sub-pixel);
- ``cutout``: one ``size // 4`` square set to 0, its corner uniform over the positions inside;
- ``flip``: horizontal, with probability 0.5.

The geometric ops resample bilinearly about the image centre (pixel centres at integer
coordinates) and repeat the edge pixels outside (``map_coordinates(order=1, mode="nearest")``):
``grid_sample(align_corners=True, padding_mode="border")``. Parameters come from the caller's
``torch.Generator`` (`sample_params`), separate from their application (`apply`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

FREPO_OPS = ("flip", "color", "crop", "rotate", "translate", "cutout")
# the reference code's strategies: no flip for MNIST and Fashion-MNIST, flip first everywhere else
STRATEGY = "color_crop_rotate_translate_cutout"
STRATEGY_FLIP = "flip_" + STRATEGY
NO_FLIP_DATASETS = ("mnist", "fashion_mnist")


@dataclass
class FRePoParams:
    """One batch's draw: the op, and its per-sample parameters (the others' are unused)."""

    op: str
    values: Tensor  # [n, k]: the op's parameters per sample


def sample_params(strategy: str, n: int, size: tuple[int, int], g: torch.Generator) -> FRePoParams:
    ops = strategy.split("_")
    bad = [o for o in ops if o not in FREPO_OPS]
    if bad:
        raise ValueError(f"unknown FRePo augmentation op(s) {bad}; valid: {', '.join(FREPO_OPS)}")
    op = ops[int(torch.randint(len(ops), (1,), generator=g))]
    h, w = size

    def u(lo: float, hi: float, k: int = 1) -> Tensor:
        return lo + (hi - lo) * torch.rand(n, k, generator=g)

    if op == "color":
        values = torch.cat([u(-0.25, 0.25), u(-0.25, 0.25).exp(), u(-0.25, 0.25).exp()], 1)
    elif op == "crop":
        zoom = u(math.log(0.8), math.log(1.25)).exp()
        limit = torch.cat([(h * zoom - h).abs() / 2, (w * zoom - w).abs() / 2], 1)
        values = torch.cat([zoom, (2 * torch.rand(n, 2, generator=g) - 1) * limit], 1)
    elif op == "rotate":
        values = u(math.radians(-15), math.radians(15))
    elif op == "translate":
        values = torch.cat([u(-h / 8, h / 8), u(-w / 8, w / 8)], 1)
    elif op == "cutout":
        ch, cw = h // 4, w // 4
        values = torch.cat([torch.randint(h - ch + 1, (n, 1), generator=g),
                            torch.randint(w - cw + 1, (n, 1), generator=g)], 1).float()
    else:  # flip
        values = (torch.rand(n, 1, generator=g) < 0.5).float()
    return FRePoParams(op, values)


def _resample(x: Tensor, src_y: Tensor, src_x: Tensor) -> Tensor:
    """Bilinear sampling of ``x`` at pixel coordinates ``[n, H, W]``, edge pixels repeated outside."""
    h, w = x.shape[-2:]
    grid = torch.stack([2 * src_x / max(w - 1, 1) - 1, 2 * src_y / max(h - 1, 1) - 1], -1)
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="border", align_corners=True)


def apply(x: Tensor, p: FRePoParams) -> Tensor:
    """``x [n, C, H, W]`` with the op of ``p`` applied to each sample."""
    n, _, h, w = x.shape
    v = p.values.to(x.device, x.dtype)
    if p.op == "color":
        x = x + v[:, 0].view(n, 1, 1, 1)
        m = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - m) * v[:, 1].view(n, 1, 1, 1) + m
        m = x.mean(dim=1, keepdim=True)
        return (x - m) * v[:, 2].view(n, 1, 1, 1) + m
    if p.op == "cutout":
        ch, cw = h // 4, w // 4
        rows = torch.arange(h, device=x.device).view(1, h, 1)
        cols = torch.arange(w, device=x.device).view(1, 1, w)
        r0, c0 = v[:, 0].long().view(n, 1, 1), v[:, 1].long().view(n, 1, 1)
        hole = (rows >= r0) & (rows < r0 + ch) & (cols >= c0) & (cols < c0 + cw)
        return x.masked_fill(hole.unsqueeze(1), 0.0)
    if p.op == "flip":
        return torch.where(v[:, 0].view(n, 1, 1, 1) > 0, x.flip(-1), x)
    # geometric: output pixel (r, c) at centred coordinates (y, x) reads source M (y, x, 1) + centre
    cy, cx = h / 2 - 0.5, w / 2 - 0.5
    yy = (torch.arange(h, device=x.device, dtype=x.dtype) - cy).view(1, h, 1).expand(n, h, w)
    xx = (torch.arange(w, device=x.device, dtype=x.dtype) - cx).view(1, 1, w).expand(n, h, w)
    if p.op == "crop":
        z, oy, ox = (v[:, k].view(n, 1, 1) for k in range(3))
        sy, sx = (yy + oy) / z, (xx + ox) / z
    elif p.op == "rotate":
        c, s = v[:, 0].cos().view(n, 1, 1), v[:, 0].sin().view(n, 1, 1)
        sy, sx = c * yy + s * xx, -s * yy + c * xx
    else:  # translate
        sy, sx = yy - v[:, 0].view(n, 1, 1), xx - v[:, 1].view(n, 1, 1)
    return _resample(x, sy + cy, sx + cx)


class FRePoAugment:
    """``augment(x, g)``: FRePo's training-time augmentation of one batch (one op, fresh parameters)."""

    def __init__(self, flip: bool) -> None:
        self.strategy = STRATEGY_FLIP if flip else STRATEGY

    def __call__(self, x: Tensor, g: torch.Generator) -> Tensor:
        return apply(x, sample_params(self.strategy, x.shape[0], tuple(x.shape[-2:]), g))
