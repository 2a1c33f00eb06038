"""DSA's ops and `apply`: the transforms behind `augment.dsa`'s parameters.

Each op registers itself in `DSA_OP_REGISTRY` (pixel ops transform every sample, affine ops return
per-sample matrices); `apply` runs a strategy's ops in order, composing consecutive affine ops into
one resampling. See `augment.dsa` for the paper, the reference and the deliberate differences.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from .dsa import DSA_OP_REGISTRY, DSAConfig, DSAParams, _cutout_size, register_op


# --- ops ------------------------------------------------------------------------------------


def _per_sample(t: Tensor, dtype: torch.dtype) -> Tensor:
    return t.to(dtype).view(-1, 1, 1, 1)


@register_op("color")
def _color(x: Tensor, p: DSAParams, cfg: DSAConfig) -> Tensor:
    x = x + _per_sample(p.brightness, x.dtype)
    m = x.mean(dim=1, keepdim=True)
    x = (x - m) * _per_sample(p.saturation, x.dtype) + m
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - m) * _per_sample(p.contrast, x.dtype) + m


@register_op("crop")
def _crop(x: Tensor, p: DSAParams, cfg: DSAConfig) -> Tensor:
    n, _, h, w = x.shape
    # Index a 1-pixel zero-padded copy; out-of-range indices clamp onto the zero border.
    rows = (torch.arange(h, device=x.device) + p.shift[:, 0:1] + 1).clamp(0, h + 1)
    cols = (torch.arange(w, device=x.device) + p.shift[:, 1:2] + 1).clamp(0, w + 1)
    b = torch.arange(n, device=x.device)[:, None, None]
    padded = F.pad(x, [1, 1, 1, 1])
    return padded[b, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # [n, h, w, C] -> NCHW


@register_op("cutout")
def _cutout(x: Tensor, p: DSAParams, cfg: DSAConfig) -> Tensor:
    _, _, h, w = x.shape
    ch, cw = _cutout_size(cfg, h, w)
    top = p.cutout_center[:, 0:1] - ch // 2
    left = p.cutout_center[:, 1:2] - cw // 2
    r = torch.arange(h, device=x.device)[None, :]
    c = torch.arange(w, device=x.device)[None, :]
    in_rows = (r >= top) & (r < top + ch)
    in_cols = (c >= left) & (c < left + cw)
    keep = ~(in_rows[:, :, None] & in_cols[:, None, :])
    return x * keep[:, None].to(x.dtype)


@register_op("flip")
def _flip(x: Tensor, p: DSAParams, cfg: DSAConfig) -> Tensor:
    return torch.where(p.flip.view(-1, 1, 1, 1), x.flip(3), x)


def _matrix(a: Tensor, b: Tensor, c: Tensor, d: Tensor) -> Tensor:
    """Per-sample ``[[a, b, 0], [c, d, 0], [0, 0, 1]]``."""
    z, o = torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([a, b, z, c, d, z, z, z, o], dim=1).view(-1, 3, 3)


@register_op("scale", affine=True)
def _scale(p: DSAParams, dtype: torch.dtype) -> Tensor:
    s = p.scale.to(dtype)
    z = torch.zeros_like(s[:, 0])
    return _matrix(s[:, 0], z, z, s[:, 1])


@register_op("rotate", affine=True)
def _rotate(p: DSAParams, dtype: torch.dtype) -> Tensor:
    a = p.angle.to(torch.float64) * (math.pi / 180.0)
    cos, sin = a.cos().to(dtype), a.sin().to(dtype)
    return _matrix(cos, -sin, sin, cos)


DSA_OPS: tuple[str, ...] = tuple(DSA_OP_REGISTRY.names())  # every registered op, sorted


# --- apply ----------------------------------------------------------------------------------


def _runs(ops: tuple[str, ...]) -> Iterator[tuple[bool, list[int]]]:
    """Group op indices into maximal runs of consecutive affine ops; pixel ops stand alone."""
    k = 0
    while k < len(ops):
        if not DSA_OP_REGISTRY.get(ops[k]).affine:
            yield False, [k]
            k += 1
            continue
        run = []
        while k < len(ops) and DSA_OP_REGISTRY.get(ops[k]).affine:
            run.append(k)
            k += 1
        yield True, run


def _keep_where(mask: Tensor, new: Tensor, old: Tensor) -> Tensor:
    return torch.where(mask.view(-1, 1, 1, 1), new, old)


def _affine(x: Tensor, p: DSAParams, run: list[int], align_corners: bool = False) -> Tensor:
    """Resample once with the composition of the run's active matrices (identity where inactive)."""
    n = x.shape[0]
    eye = torch.eye(3, dtype=x.dtype, device=x.device).expand(n, 3, 3)
    theta, touched = eye, torch.zeros(n, dtype=torch.bool, device=x.device)
    for k in run:
        on = p.active[:, k]
        m = DSA_OP_REGISTRY.get(p.ops[k]).fn(p, x.dtype)
        # Applying A then B samples x(A B q): the matrices compose left to right.
        theta = theta @ torch.where(on.view(-1, 1, 1), m, eye)
        touched = touched | on
    grid = F.affine_grid(theta[:, :2], list(x.shape), align_corners=align_corners)
    warped = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=align_corners)
    return _keep_where(touched, warped, x)  # untouched samples stay bit-exact


def apply(x: Tensor, params: DSAParams, cfg: DSAConfig) -> Tensor:
    """Augment ``x`` ``[n, C, H, W]`` with ``params``; differentiable in ``x``, no per-sample loop.

    Params are moved to ``x``'s device. Samples on which an op is not active pass through it
    unchanged (bit-exact).
    """
    if x.dim() != 4:
        raise ValueError(f"DSA expects images [n, C, H, W], got shape {tuple(x.shape)}")
    if x.shape[0] != len(params):
        raise ValueError(
            f"batch has {x.shape[0]} images but params were drawn for {len(params)}; "
            "draw for the larger batch and use params.take(...) for the other"
        )
    if tuple(x.shape[-2:]) != params.image_size:
        raise ValueError(f"images are {tuple(x.shape[-2:])} but params were drawn for {params.image_size}")
    if params.ops != cfg.ops:
        raise ValueError(f"params were drawn for ops {params.ops} but the config's strategy gives {cfg.ops}")
    p = params.to(x.device)
    out = x
    for affine, run in _runs(p.ops):
        if affine:
            out = _affine(out, p, run, cfg.align_corners)
        else:
            k = run[0]
            out = _keep_where(p.active[:, k], DSA_OP_REGISTRY.get(p.ops[k]).fn(out, p, cfg), out)
    return out.contiguous()
