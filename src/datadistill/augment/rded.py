"""RDED's student-training augmentation (Sun et al., CVPR 2024; reference code LINs-lab/RDED,
``validation/main.py`` and ``validation/utils.py``), as the FKD/SRe2L line trains on soft labels.

Per image, in the reference's order: ``ShufflePatches(factor)`` (the ``factor x factor`` tiles of a
stitched RDED image reordered: column strips, then row strips, each in a random order),
``RandomResizedCrop(size, scale=(1/factor, 1))`` with torchvision's default ratio ``(3/4, 4/3)`` and
antialiased bilinear resizing, and a horizontal flip with probability 0.5. Then, on the whole batch,
**CutMix** every time: ``lam ~ U(0, 1)`` (``Beta(1, 1)``, RDED's ``--cutmix 1.0``), a box of side
``int(size * sqrt(1 - lam))`` about a uniform centre (clipped to the image; half-sides rounded
down), filled from a random permutation of the batch. The mixed labels are never used: the teacher
relabels the mixed images (``labels="teacher"``).

With ``factor=1`` (RDED's scripts for CIFAR-10/100 and Tiny ImageNet) the tile shuffle is the
identity and every crop is the whole image, so only the flip and CutMix act. Randomness comes from
the caller's ``torch.Generator``: every parameter is drawn (`sample_crop`, `sample_cutmix`) before
it is applied.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

RATIO = (3 / 4, 4 / 3)


def _randint(lo: int, hi: int, g: torch.Generator) -> int:
    """An integer in ``[lo, hi)``."""
    return int(torch.randint(lo, hi, (1,), generator=g))


def shuffle_patches(img: Tensor, factor: int, g: torch.Generator) -> Tensor:
    """The reference's ``ShufflePatches``: ``factor`` strips of ``size // factor`` pixels along the width
    in a random order, then the same along the height (trailing pixels beyond ``factor`` strips drop)."""
    if factor == 1:
        return img
    for dim in (-1, -2):
        t = img.shape[dim] // factor
        order = torch.randperm(factor, generator=g).tolist()
        img = torch.cat([img.narrow(dim, k * t, t) for k in order], dim)
    return img


def sample_crop(height: int, width: int, scale: tuple[float, float], g: torch.Generator) -> tuple[int, int, int, int]:
    """torchvision's ``RandomResizedCrop.get_params``: ``(top, left, h, w)``."""
    area = height * width
    log_ratio = (math.log(RATIO[0]), math.log(RATIO[1]))
    for _ in range(10):
        target = area * (scale[0] + (scale[1] - scale[0]) * float(torch.rand(1, generator=g)))
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * float(torch.rand(1, generator=g)))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return _randint(0, height - h + 1, g), _randint(0, width - w + 1, g), h, w
    in_ratio = width / height
    if in_ratio < min(RATIO):
        w, h = width, int(round(width / min(RATIO)))
    elif in_ratio > max(RATIO):
        h, w = height, int(round(height * max(RATIO)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def resized_crop(img: Tensor, box: tuple[int, int, int, int], size: tuple[int, int]) -> Tensor:
    """``img [C, H, W]`` cropped to ``box`` and resized to ``size`` (bilinear, antialiased)."""
    top, left, h, w = box
    crop = img[:, top : top + h, left : left + w]
    if tuple(crop.shape[-2:]) == tuple(size):
        return crop
    return F.interpolate(crop.unsqueeze(0), size=size, mode="bilinear", align_corners=False, antialias=True)[0]


def sample_cutmix(n: int, height: int, width: int, g: torch.Generator) -> tuple[Tensor, tuple[int, int, int, int]]:
    """The batch permutation and the box ``(r1, r2, c1, c2)`` of the reference's ``cutmix``/``rand_bbox``."""
    perm = torch.randperm(n, generator=g)
    lam = float(torch.rand(1, generator=g))
    cut = math.sqrt(1.0 - lam)
    ch, cw = int(height * cut), int(width * cut)
    r, c = _randint(0, height, g), _randint(0, width, g)
    box = (min(max(r - ch // 2, 0), height), min(max(r + ch // 2, 0), height),
           min(max(c - cw // 2, 0), width), min(max(c + cw // 2, 0), width))
    return perm, box


def cutmix(x: Tensor, perm: Tensor, box: tuple[int, int, int, int]) -> Tensor:
    r1, r2, c1, c2 = box
    out = x.clone()
    out[:, :, r1:r2, c1:c2] = x[perm.to(x.device), :, r1:r2, c1:c2]
    return out


class RDEDAugment:
    """``augment(x, g)``: RDED's per-image shuffle, crop and flip, then CutMix on the batch."""

    def __init__(self, factor: int = 1, flip: bool = True) -> None:
        if factor < 1:
            raise ValueError(f"the RDED factor must be >= 1, got {factor}")
        self.factor, self.flip = factor, flip

    def __call__(self, x: Tensor, g: torch.Generator) -> Tensor:
        size = tuple(x.shape[-2:])
        out = []
        for img in x:
            img = shuffle_patches(img, self.factor, g)
            box = sample_crop(img.shape[-2], img.shape[-1], (1.0 / self.factor, 1.0), g)
            img = resized_crop(img, box, size)
            if self.flip and float(torch.rand(1, generator=g)) < 0.5:
                img = img.flip(-1)
            out.append(img)
        x = torch.stack(out)
        perm, box = sample_cutmix(x.shape[0], size[0], size[1], g)
        return cutmix(x, perm, box)
