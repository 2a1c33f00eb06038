"""RDED: realistic, diverse crops of real images, chosen and labelled by a trained teacher.

Sun, Shi, Yu & Lin, "On the Diversity and Realism of Distilled Dataset: An Efficient Dataset
Distillation Paradigm", CVPR 2024 (arXiv 2312.03526); reference code LINs-lab/RDED.

No optimization: like the coresets, the result is the set's initialization and the method has no
iterations. Per class ``c`` (the paper's two stages, Fig. 3):

1. Candidates. ``mipc`` random training images of ``c``; from each, ``num_crop`` square random
   resized crops (area a fraction U(``min_scale``, ``max_scale``) of the image, torchvision's
   ``RandomResizedCrop`` with ratio 1), resized to ``size // factor`` per side (`sample_boxes`,
   `crop_resize`).
2. Realism score. Each crop, zero-padded back to the full size at its centre (zero is the mean
   colour in normalized space), is scored by the teacher ("observer") with the cross-entropy of the
   true class, ``-log p_teacher(c | crop)``: lower is more realistic (`crop_losses`).
3. Selection. Each image keeps its best crop (its "key patch"); the class keeps the
   ``ipc * factor**2`` images whose key patches score best, in ascending loss (`select_crops`).
   At most one crop per real image keeps the selection diverse.
4. Stitching. The ranked crops fill ``ipc`` images of ``factor x factor`` tiles: tile ``k`` (row
   major) of image ``i`` holds crop ``k * ipc + i`` (`stitch`), so every image gets one crop from
   each band of the ranking. With ``factor=1`` the images are the crops themselves.
   The file records every chosen crop (`crop_records`: its training image, box, tile and score)
   under ``crops``; the run's grid and ``datadistill show`` draw each image beside its sources, the
   boxes outlined.
5. Labels. Each stitched image's soft label is the teacher's ``softmax(logits / T)`` of the whole
   image (`select_rded`); the set trains with ``label_loss="kl"`` at temperature ``T``. The
   reference code stores no labels: its evaluation relabels every augmented batch with the teacher
   (FKD/SRe2L practice), which the file's evaluation (`rded_from_file`) asks for when the teacher
   file exists; the stored labels are the fallback without it.

Deviations from the reference code: a crop's side is rounded as torchvision rounds it but never
below the floor's (``min_scale``; torchvision may fall short of it by part of a pixel); a crop
larger than the image's shorter side is clamped to it (torchvision retries and falls back to a
centre crop; for square images the case never arises); crops are resized with bilinear
interpolation without antialiasing (the reference antialiases, which only matters when a crop is
shrunk, i.e. ``factor >= 2``); images are kept as float tensors (the reference writes 8-bit JPEGs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..config import ConfigError
from ..data.spec import LoadedDataset
from ..synset import PixelSet
from ..teachers import TeacherError, load_teacher
from .base import Context, FileEvaluation, MethodEntry, Selected, check_ranges, register_method

Logits = Callable[[torch.Tensor], torch.Tensor]  # normalized images [n, C, H, W] -> logits [n, classes]


@dataclass(frozen=True)
class RDEDConfig:
    """RDED's settings; the defaults are the reference scripts' for the low-resolution datasets
    (CIFAR-10/100, Tiny ImageNet: ``--factor 1 --num-crop 5 --mipc 300``; ImageNet subsets use
    ``factor=2``), the crop scale of ``RandomResizedCrop`` and the temperature of its CutMix
    evaluation (20).

    ``teacher``: path of a teacher file (``datadistill teacher ...``) trained on the run's dataset.
    ``min_scale``, ``max_scale``: the crop-scale floor and ceiling, the fractions of the image's area a
    candidate crop covers (the reference: torchvision's default 0.08 to 1).
    ``batch_size``: crops per teacher forward (memory only, never the result).
    """

    teacher: str = ""
    factor: int = 1
    num_crop: int = 5
    mipc: int = 300
    min_scale: float = 0.08
    max_scale: float = 1.0
    temperature: float = 20.0
    batch_size: int = 500

    def __post_init__(self) -> None:
        check_ranges("rded", self, positive=("factor", "num_crop", "mipc", "batch_size"))
        if not 0 < self.min_scale <= 1:
            raise ConfigError(f"rded: min_scale (the smallest crop area, a fraction of the image) must be in (0, 1], "
                              f"got {self.min_scale}; the reference's is 0.08")
        if not self.min_scale <= self.max_scale <= 1:
            raise ConfigError(f"rded: max_scale must be in [min_scale, 1] = [{self.min_scale}, 1], "
                              f"got {self.max_scale}")
        if not self.temperature > 0:
            raise ConfigError(f"rded: temperature must be > 0, got {self.temperature}")


# ------------------------------------------------------------------------------------ crops
def floor_side(size: tuple[int, int], min_scale: float) -> int:
    """The smallest square side whose area is at least ``min_scale`` of an ``H x W`` image's."""
    area = min_scale * size[0] * size[1]
    side = max(1, math.ceil(math.sqrt(area)))
    while side > 1 and (side - 1) ** 2 >= area:  # sqrt's rounding, both ways
        side -= 1
    while side * side < area:
        side += 1
    return side


def sample_boxes(n: int, num_crop: int, size: tuple[int, int], scale: tuple[float, float],
                 generator: torch.Generator) -> torch.Tensor:
    """``[n, num_crop, 3]`` integer boxes ``(top, left, side)``: square crops covering a fraction
    U(scale) of an ``H x W`` image's area, at a uniform position (RandomResizedCrop, ratio 1). The
    side is rounded as torchvision rounds it, but never below `floor_side`, so that every box covers
    at least ``scale[0]`` of the image (torchvision's rounding may fall short by part of a pixel)."""
    H, W = size
    area = torch.empty(n, num_crop).uniform_(scale[0], scale[1], generator=generator) * (H * W)
    side = area.sqrt().round().long().clamp(min(floor_side(size, scale[0]), min(H, W)), min(H, W))
    u = torch.rand(n, num_crop, 2, generator=generator)
    top = (u[..., 0] * (H - side + 1)).floor().long()
    left = (u[..., 1] * (W - side + 1)).floor().long()
    return torch.stack([top, left, side], -1)


def crop_resize(images: torch.Tensor, boxes: torch.Tensor, out: tuple[int, int]) -> torch.Tensor:
    """``[n, m, C, h, w]``: box ``boxes[i, j]`` of ``images[i]`` resized to ``out`` bilinearly, as
    ``F.interpolate(crop, out, mode="bilinear", align_corners=False)`` would, for all boxes in one
    ``grid_sample``: each output pixel's source coordinate is computed inside its own box and
    clamped there, so no pixel outside a box contributes."""
    n, m, _ = boxes.shape
    C, H, W = images.shape[1:]
    h, w = out
    b = boxes.to(images.device, torch.float32).view(n * m, 3)
    top, left, side = b[:, :1], b[:, 1:2], b[:, 2:]

    def coords(k: int, start: torch.Tensor) -> torch.Tensor:  # absolute pixel centres [nm, k]
        src = (torch.arange(k, device=images.device, dtype=torch.float32) + 0.5) * (side / k) - 0.5
        return start + src.clamp(min=0).minimum(side - 1)

    ys = coords(h, top) * (2 / H) + (1 / H - 1)  # to grid_sample's [-1, 1], align_corners=False
    xs = coords(w, left) * (2 / W) + (1 / W - 1)
    grid = torch.stack([xs[:, None, :].expand(-1, h, -1), ys[:, :, None].expand(-1, -1, w)], -1)
    src = images.repeat_interleave(m, 0)
    crops = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return crops.view(n, m, C, h, w)


def pad_center(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Zero-pad ``[n, C, h, w]`` to ``size`` with the crop in the middle (extra row/column at the end)."""
    dh, dw = size[0] - x.shape[-2], size[1] - x.shape[-1]
    return F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))


def crop_losses(logits: Logits, crops: torch.Tensor, label: int, size: tuple[int, int],
                batch_size: int) -> torch.Tensor:
    """``[n, m]`` realism scores: the teacher's cross-entropy of class ``label`` on each crop of
    ``crops`` ``[n, m, C, h, w]``, zero-padded to ``size``; lower is more realistic."""
    flat = crops.flatten(0, 1)
    out = torch.cat([F.cross_entropy(logits(pad_center(flat[i : i + batch_size], size)).float(),
                                     torch.full((min(batch_size, flat.shape[0] - i),), label, device=flat.device),
                                     reduction="none")
                     for i in range(0, flat.shape[0], batch_size)])
    return out.view(crops.shape[:2])


def select_crops(losses: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows and columns of ``losses [n, m]`` of the ``k`` selected crops, best first: each row (real
    image) keeps its lowest-loss crop, then the ``k`` rows with the lowest such loss."""
    if not 1 <= k <= losses.shape[0]:
        raise ValueError(f"cannot select {k} crops from {losses.shape[0]} images")
    best, col = losses.min(1)
    rows = torch.sort(best, stable=True).indices[:k]
    return rows, col[rows]


def stitch(crops: torch.Tensor, ipc: int, factor: int, size: tuple[int, int]) -> torch.Tensor:
    """``[ipc, C, H, W]`` from ``ipc * factor**2`` ranked crops ``[k, C, h, w]``: tile ``(r, s)`` of
    image ``i`` is crop ``(r * factor + s) * ipc + i``. Tiles split ``H`` and ``W`` as evenly as
    possible (the first ``H % factor`` rows of tiles one pixel taller); a crop is resized to its
    tile by nearest-neighbour (the identity when ``H`` and ``W`` are multiples of ``factor``)."""
    tiles = crops.view(factor, factor, ipc, *crops.shape[1:])
    rows, cols = _tile_sizes(size[0], factor), _tile_sizes(size[1], factor)
    return torch.cat([torch.cat([F.interpolate(tiles[r, s], size=(rows[r], cols[s]), mode="nearest")
                                 for s in range(factor)], -1) for r in range(factor)], -2)


def _tile_sizes(n: int, factor: int) -> list[int]:
    """``n`` pixels split into ``factor`` tiles as evenly as possible, the first ``n % factor`` larger."""
    return [n // factor + (r < n % factor) for r in range(factor)]


def tile_places(k: int, ipc: int, factor: int, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Where `stitch` puts ranked crop ``j < k``: the image (``j % ipc``, within the class) and its tile
    ``(top, left, height, width)`` in that image, as ``([k], [k, 4])`` integer tensors."""
    rows, cols = _tile_sizes(size[0], factor), _tile_sizes(size[1], factor)
    tops, lefts = [sum(rows[:r]) for r in range(factor)], [sum(cols[:s]) for s in range(factor)]
    j = torch.arange(k)
    r, s = (j // ipc).div(factor, rounding_mode="floor"), (j // ipc) % factor
    places = torch.stack([torch.tensor(tops)[r], torch.tensor(lefts)[s], torch.tensor(rows)[r],
                          torch.tensor(cols)[s]], -1)
    return j % ipc, places


# ------------------------------------------------------------------------------------ the set
@dataclass
class Selection:
    """What `select_class` chose for one class: the stitched images and, per crop in rank order,
    the index of its real image (into ``data.train``), its box ``(top, left, side)``, its score, the
    image of the class it went to (``0 .. ipc-1``) and its place there ``(top, left, height, width)``."""

    images: torch.Tensor
    sources: torch.Tensor
    boxes: torch.Tensor
    losses: torch.Tensor
    image: torch.Tensor
    places: torch.Tensor


def check_floor(cfg: RDEDConfig, size: tuple[int, int]) -> None:
    """ConfigError when the crop-scale floor asks for square crops larger than the image's shorter side."""
    side = floor_side(size, cfg.min_scale)
    if side > min(size):
        raise ConfigError(f"rded: min_scale={cfg.min_scale} asks for square crops of at least {side} pixels a side, "
                          f"more than this {size[0]}x{size[1]} image's shorter side; lower min_scale")


def select_class(cfg: RDEDConfig, logits: Logits, data: LoadedDataset, c: int, ipc: int,
                 generator: torch.Generator) -> Selection:
    """One class of the RDED set (steps 1-4 of the module docstring)."""
    train, spec = data.train, data.spec
    k = ipc * cfg.factor**2
    pool = train.sample_indices(c, cfg.mipc, generator)
    if pool.numel() < k:
        raise ConfigError(f"rded: class {c} has {pool.numel()} training images, fewer than ipc * factor^2 = {k} "
                          "crops to select (one per image); lower ipc or factor")
    size = spec.image_size
    check_floor(cfg, size)
    out = (size[0] // cfg.factor, size[1] // cfg.factor)
    boxes = sample_boxes(pool.numel(), cfg.num_crop, size, (cfg.min_scale, cfg.max_scale), generator)
    crops = crop_resize(train.images[pool], boxes, out)
    losses = crop_losses(logits, crops, c, size, cfg.batch_size)
    rows, cols = select_crops(losses, k)
    images = stitch(crops[rows, cols], ipc, cfg.factor, size)
    image, places = tile_places(k, ipc, cfg.factor, size)
    return Selection(images, pool[rows.to(pool.device)].cpu(), boxes[rows, cols], losses[rows, cols].cpu(), image,
                     places)


def crop_records(selections: list[Selection], ipc: int) -> dict[str, Any]:
    """The file's ``crops`` metadata (the form `viz.save_crop_grid` draws): per chosen crop, class by
    class in rank order, the row of the set it is in, its training image, its box and place, both
    ``(top, left, height, width)`` in pixels, and its score."""
    rows, sources, boxes, places, scores = [], [], [], [], []
    for c, sel in enumerate(selections):
        rows += (sel.image + c * ipc).tolist()
        sources += sel.sources.tolist()
        boxes += [[t, l, side, side] for t, l, side in sel.boxes.tolist()]
        places += sel.places.tolist()
        scores += [round(v, 5) for v in sel.losses.tolist()]
    return {"format": "box and place: top, left, height, width (pixels); source: index into the training split",
            "image": rows, "source": sources, "box": boxes, "place": places, "score": scores}


def select_rded(cfg: RDEDConfig, data: LoadedDataset, ipc: int, init: str, generator: torch.Generator) -> Selected:
    """RDED's selection (`MethodEntry.select`): the stitched images of every class with the teacher's
    soft labels; the file records the teacher (path, sha256, model, test accuracy) under ``teacher``
    and the chosen crops under ``crops`` (`crop_records`)."""
    if init != "real":
        raise ConfigError(f"rded crops real images; init must be 'real', got {init!r}")
    device = data.train.images.device
    teacher = load_teacher(Path(cfg.teacher).expanduser().resolve(), device=device)
    selections = [select_class(cfg, teacher.logits, data, c, ipc, generator) for c in range(data.spec.num_classes)]
    images = torch.cat([sel.images for sel in selections])
    soft = torch.softmax(teacher.logits(images).float() / cfg.temperature, dim=1)
    labels = torch.arange(data.spec.num_classes).repeat_interleave(ipc)
    synset = PixelSet(images.cpu(), labels, data.spec.num_classes, soft_labels=soft.cpu(), label_loss="kl",
                      label_temperature=cfg.temperature)
    return Selected(synset, {"teacher": teacher.describe(), "crops": crop_records(selections, ipc)})


# ------------------------------------------------------------------------------------ checks, file
def check_rded(cfg: RDEDConfig, ctx: Context) -> None:
    """RDED's requirement (`MethodEntry.check`): a readable teacher trained on the run's data."""
    spec = ctx.spec
    make = (f"`datadistill teacher --dataset {spec.name} --out PATH`"
            + (" (with the run's --zca)" if spec.ref.zca is not None else ""))
    if not cfg.teacher:
        raise ConfigError(f"rded needs a teacher trained on {spec.name}: train one with {make} and set "
                          "method_config.teacher=PATH")
    path = Path(cfg.teacher).expanduser()
    if not path.is_file():
        raise ConfigError(f"rded: no teacher file at {path}; train one with {make.replace('PATH', str(path))}")
    try:
        load_teacher(path).check_fits(spec)
    except TeacherError as e:
        raise ConfigError(f"rded: {e}") from None
    check_floor(cfg, spec.image_size)


def rded_from_file(meta: dict[str, Any], spec: Any) -> FileEvaluation:
    """An RDED file is evaluated as the paper does, relabelling every augmented batch with the
    teacher at the set's temperature, when the recorded teacher file is still there; else with the
    stored soft labels. The loss stays the protocol's (``auto``: KL with the ``T^2`` factor;
    ``rded-paper``: the reference's unscaled KL), and ``rded_factor`` tells the reference's tile
    shuffle (``augment="rded"``) the set's factor."""
    cfg = meta.get("method_config") or {}
    t, factor = cfg.get("temperature"), cfg.get("factor")
    teacher = (meta.get("teacher") or {}).get("path")
    protocol: dict[str, Any] = {"label_temperature": t} if t is not None else {}
    if factor is not None:
        protocol["rded_factor"] = int(factor)
    if isinstance(teacher, str) and Path(teacher).is_file():
        return FileEvaluation(protocol={**protocol, "labels": "teacher", "teacher": teacher})
    return FileEvaluation(protocol={**protocol, "labels": "soft"})


register_method(MethodEntry(
    name="rded", config=RDEDConfig, select=select_rded, image_inits=("real",),
    check=check_rded, from_file=rded_from_file, teacher=lambda cfg: cfg.teacher or None,
    description="realistic, diverse teacher-ranked crops with soft labels (Sun et al., CVPR 2024)",
))
