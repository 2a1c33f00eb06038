"""Differentiable Siamese Augmentation (DSA).

Zhao & Bilen, "Dataset Condensation with Differentiable Siamese Augmentation", ICML 2021.
The paper replaces the matching objective ``D(grad L(S), grad L(T))`` of dataset condensation
with ``D(grad L(A_w(S)), grad L(A_w(T)))``: one augmentation ``A`` with the *same*
random parameters ``w`` is applied to the synthetic batch ``S`` and the real batch ``T`` of a
class ("Siamese"), and ``A`` is differentiable so the gradient reaches the synthetic pixels.

Randomness is split from the transform (torchvision v2 ``make_params``/``transform``, kornia):

* `sample_params` draws ``w`` for ``n`` images from a given ``torch.Generator`` (only that one);
* `dsa_ops.apply` applies ``w`` to a batch ``[n, C, H, W]``, batched and differentiable in the images;
* `siamese_params_for_classes` pairs the draws of a class-major real and synthetic batch.

Ops (reference ``AUGMENT_FNS`` of VICO-UoE/DatasetCondensation; ranges from ``ParamDiffAug``):
``color`` (brightness, saturation, contrast in that order), ``crop`` (zero-padded integer
translation), ``cutout`` (zeroed square hole), ``flip`` (horizontal), ``scale`` and ``rotate``
(bilinear resampling). Mode ``"single"`` (reference ``'S'``) applies one op drawn uniformly from
the strategy; ``"all"`` (reference ``'M'``) applies every op in strategy order.

Differences from the reference, on purpose:

* consecutive affine ops (``scale_rotate`` in ``"all"`` mode) are composed and resampled once, not
  twice: one bilinear blur instead of two, one ``grid_sample`` call;
* mode ``"single"`` draws the op per sample by default (``op_choice="per_batch"`` draws it once
  per call as the reference does; with `siamese_params_for_classes` both give one op per class);
* parameters come from an explicit generator, never from reseeding the global RNG.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, ClassVar, Sequence

import torch
from torch import Tensor

from ..registry import Registry, UnknownNameError

MODES = ("single", "all")
OP_CHOICES = ("per_sample", "per_batch")


@dataclass(frozen=True)
class DSAOp:
    """One registered op.

    A pixel op's ``fn(x, params, cfg)`` transforms every sample (the caller keeps the input where
    the op is not active). An affine op's ``fn(params, dtype)`` returns per-sample ``[n, 3, 3]``
    matrices in ``F.affine_grid``'s normalized output->input convention; consecutive affine ops
    are composed and resampled once.
    """

    name: str
    affine: bool
    fn: Callable[..., Tensor]


DSA_OP_REGISTRY: Registry[DSAOp] = Registry("DSA op")


def register_op(name: str, affine: bool = False) -> Callable[[Callable[..., Tensor]], Callable[..., Tensor]]:
    def deco(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        DSA_OP_REGISTRY.add(name, DSAOp(name, affine, fn))
        return fn

    return deco


def parse_strategy(strategy: str) -> tuple[str, ...]:
    """``"color_crop_flip"`` -> ``("color", "crop", "flip")``; ``""`` and ``"none"`` -> ``()``."""
    if strategy.strip().lower() in ("", "none"):
        return ()
    ops: list[str] = []
    for part in strategy.split("_"):
        try:
            name = DSA_OP_REGISTRY.canonical(part)
        except UnknownNameError as e:
            raise ValueError(
                f"{e}. Join ops with '_' in the strategy, e.g. 'color_crop_cutout_flip_scale_rotate' "
                f"(got strategy {strategy!r})."
            ) from None
        if name in ops:
            raise ValueError(f"DSA op {name!r} appears twice in strategy {strategy!r}; list each op once.")
        ops.append(name)
    return tuple(ops)


@dataclass(frozen=True)
class DSAConfig:
    """DSA settings; defaults are the reference ``ParamDiffAug`` values.

    ``op_choice`` applies to mode ``"single"``: ``"per_sample"`` draws the op for each sample,
    ``"per_batch"`` once per `sample_params` call (what the reference does in every call).
    ``flip_prob`` was ``flip`` (which also names the op, and the spec's flag); the old key still loads
    from a config mapping (`config.from_dict`), with a deprecation message.
    """

    RENAMED: ClassVar[dict[str, str]] = {"flip": "flip_prob"}

    strategy: str = "color_crop_cutout_flip_scale_rotate"
    mode: str = "single"
    op_choice: str = "per_sample"
    scale: float = 1.2  # per-axis factors uniform in [1/scale, scale]
    rotate: float = 15.0  # degrees, uniform in [-rotate, rotate]
    crop: float = 0.125  # integer shift up to int(size * crop + 0.5) pixels, zero padded
    cutout: float = 0.5  # hole side int(size * cutout + 0.5)
    brightness: float = 1.0  # x + (u - 0.5) * brightness
    saturation: float = 2.0  # mix with the per-pixel channel mean by u * saturation
    contrast: float = 0.5  # mix with the per-image mean by u + contrast
    flip_prob: float = 0.5  # probability of a horizontal flip when the op is applied
    # grid sampling of scale/rotate: False as the DC/DSA/DM code behaves on today's torch (its calls
    # name no value; the default has been False since torch 1.3), True as MTT's and HaBa's code pass
    align_corners: bool = False

    def __post_init__(self) -> None:
        parse_strategy(self.strategy)
        if self.mode not in MODES:
            raise ValueError(
                f"unknown DSA mode {self.mode!r}; valid modes: {', '.join(MODES)} "
                "(the reference's 'S' is 'single', its 'M' is 'all')"
            )
        if self.op_choice not in OP_CHOICES:
            raise ValueError(f"unknown DSA op_choice {self.op_choice!r}; valid: {', '.join(OP_CHOICES)}")
        checks = {
            "scale": self.scale >= 1.0,
            "rotate": self.rotate >= 0.0,
            "crop": 0.0 <= self.crop <= 1.0,
            "cutout": 0.0 <= self.cutout <= 1.0,
            "brightness": self.brightness >= 0.0,
            "saturation": self.saturation >= 0.0,
            "flip_prob": 0.0 <= self.flip_prob <= 1.0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(
                f"DSAConfig out of range: {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)} "
                "(need scale >= 1, rotate/brightness/saturation >= 0, crop/cutout/flip_prob in [0, 1])"
            )

    @property
    def ops(self) -> tuple[str, ...]:
        return parse_strategy(self.strategy)


_TENSOR_FIELDS = (
    "active", "flip", "scale", "angle", "shift", "brightness", "saturation", "contrast", "cutout_center",
)


@dataclass(frozen=True)
class DSAParams:
    """Per-sample augmentation parameters for ``n`` images (every tensor has ``n`` rows).

    ``active[i, k]`` says whether op ``ops[k]`` is applied to sample ``i``; the other fields hold
    the draws of every op for every sample whether or not it is active.
    """

    ops: tuple[str, ...]
    image_size: tuple[int, int]
    active: Tensor  # [n, len(ops)] bool
    flip: Tensor  # [n] bool: flip if the flip op is active
    scale: Tensor  # [n, 2] (sx, sy): sampling-grid factors, > 1 shrinks the content
    angle: Tensor  # [n] degrees
    shift: Tensor  # [n, 2] long (dy, dx): out[i, j] = x[i + dy, j + dx], zero outside
    brightness: Tensor  # [n] additive shift
    saturation: Tensor  # [n] factor
    contrast: Tensor  # [n] factor
    cutout_center: Tensor  # [n, 2] long (cy, cx)

    def __len__(self) -> int:
        return self.active.shape[0]

    @property
    def device(self) -> torch.device:
        return self.active.device

    def _map(self, f: Callable[[Tensor], Tensor]) -> DSAParams:
        return replace(self, **{k: f(getattr(self, k)) for k in _TENSOR_FIELDS})

    def take(self, index: Tensor | Sequence[int]) -> DSAParams:
        """The parameters of samples ``index`` (a 1-D integer index; repeats and reorders allowed)."""
        idx = torch.as_tensor(index, device=self.device)
        if idx.dtype == torch.bool or idx.is_floating_point():
            raise ValueError(f"DSAParams.take needs integer indices, got dtype {idx.dtype}")
        idx = idx.to(torch.long).reshape(-1)
        return self._map(lambda t: t.index_select(0, idx))

    def to(self, device: torch.device | str) -> DSAParams:
        return self._map(lambda t: t.to(device))

    @staticmethod
    def cat(parts: Sequence[DSAParams]) -> DSAParams:
        """Concatenate parameter sets drawn with the same ops and image size."""
        if not parts:
            raise ValueError("DSAParams.cat needs at least one part")
        first = parts[0]
        for p in parts[1:]:
            if p.ops != first.ops or p.image_size != first.image_size:
                raise ValueError("DSAParams.cat: parts differ in ops or image_size")
        return replace(first, **{k: torch.cat([getattr(p, k) for p in parts]) for k in _TENSOR_FIELDS})


def _hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    h, w = (int(s) for s in image_size)
    return h, w


def _cutout_size(cfg: DSAConfig, h: int, w: int) -> tuple[int, int]:
    return int(h * cfg.cutout + 0.5), int(w * cfg.cutout + 0.5)


def sample_params(
    cfg: DSAConfig,
    n: int,
    generator: torch.Generator,
    image_size: int | Sequence[int],
    allow_flip: bool = True,
) -> DSAParams:
    """Draw the parameters of ``n`` augmentations from ``generator`` alone (on its device).

    With ``allow_flip=False`` (datasets whose labels flipping changes) flip is never applied; in
    mode ``"single"`` it is left out of the choices. The draws of every op are made for every
    sample in a fixed order, so the strategy changes only which ops are active.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    h, w = _hw(image_size)
    dev = generator.device

    def rand(*shape: int) -> Tensor:
        return torch.rand(shape, generator=generator, device=dev)

    def randint(low: int, high: int, m: int) -> Tensor:
        return torch.randint(low, high, (m,), generator=generator, device=dev)

    ops = cfg.ops
    allowed = [k for k, op in enumerate(ops) if allow_flip or op != "flip"]
    active = torch.zeros(n, len(ops), dtype=torch.bool, device=dev)
    if cfg.mode == "all":
        active[:, allowed] = True
    elif allowed:
        pick = randint(0, len(allowed), n if cfg.op_choice == "per_sample" else 1).expand(n)
        chosen = torch.tensor(allowed, dtype=torch.long, device=dev)[pick]
        active[torch.arange(n, device=dev), chosen] = True

    flip = (rand(n) < cfg.flip_prob) & allow_flip
    lo = 1.0 / cfg.scale
    scale = rand(n, 2) * (cfg.scale - lo) + lo
    angle = (rand(n) - 0.5) * 2.0 * cfg.rotate
    sh, sw = int(h * cfg.crop + 0.5), int(w * cfg.crop + 0.5)
    shift = torch.stack([randint(-sh, sh + 1, n), randint(-sw, sw + 1, n)], dim=1)
    brightness = (rand(n) - 0.5) * cfg.brightness
    saturation = rand(n) * cfg.saturation
    contrast = rand(n) + cfg.contrast
    ch, cw = _cutout_size(cfg, h, w)
    center = torch.stack([randint(0, h + 1 - ch % 2, n), randint(0, w + 1 - cw % 2, n)], dim=1)
    return DSAParams(ops, (h, w), active, flip, scale, angle, shift, brightness, saturation, contrast, center)


def siamese_params_for_classes(
    cfg: DSAConfig,
    num_classes: int,
    n_real: int,
    n_syn: int,
    generator: torch.Generator,
    image_size: int | Sequence[int],
    allow_flip: bool = True,
    *,
    per_sample: bool = False,
) -> tuple[DSAParams, DSAParams]:
    """Paired parameters for a class-major real batch ``[C * n_real]`` and synthetic ``[C * n_syn]``.

    Default (the reference: one seed per class, ``batchmode``): one draw per class, shared by all
    of that class's real and synthetic images. ``per_sample=True``: ``max(n_real, n_syn)`` draws
    per class, and real and synthetic sample ``j`` of a class share draw ``j``.
    Draws are made class by class (as the reference calls its augmentation once per class), so
    ``op_choice="per_batch"`` means one op per class.
    """
    m = max(n_real, n_syn, 1) if per_sample else 1
    params = DSAParams.cat([sample_params(cfg, m, generator, image_size, allow_flip) for _ in range(num_classes)])
    base = torch.arange(num_classes, device=params.device)[:, None] * m

    def index(k: int) -> Tensor:
        j = torch.arange(k, device=params.device) if per_sample else torch.zeros(k, dtype=torch.long, device=params.device)
        return (base + j[None, :]).reshape(-1)

    return params.take(index(n_real)), params.take(index(n_syn))
