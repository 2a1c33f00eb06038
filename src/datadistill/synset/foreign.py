"""What every importer of a reference repository's files shares (`synset.importers`): the options,
the target dataset, the registry of formats, the one safe loader (``torch.load(weights_only=True)``
with NumPy's scalars allowed) and the checks that turn a foreign file's contents into this library's
tensors, each failing with one line (`ForeignSetError`)."""

from __future__ import annotations

import hashlib
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from ..data.spec import DatasetSpec
from ..registry import Registry
from .io import SynsetFileError

Norm = tuple[tuple[float, ...], tuple[float, ...]]  # (mean, std) per channel

# what MTT (utils.py), DATM (utils/utils_baseline.py) and HaBa (utils.py) normalize CIFAR-100 with: the
# CIFAR-10 branch's mean and std, copied into get_dataset's CIFAR100 branch
CIFAR10_STATS: Norm = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))


class ForeignSetError(SynsetFileError):
    """An author's file cannot be imported: unreadable, a pickle that needs code, or contents that
    do not match the format or the dataset. The message names the file and what is wrong."""


@dataclass(frozen=True)
class ImportOptions:
    """What the files do not say. ``experiment``: DC's experiment index (None: 0). ``lr``: the
    learned step size (MTT and HaBa only log it). ``zca``: the regularization of the whitening the
    set was distilled under (None: not whitened). ``mean``/``std``: the normalization the images are
    stored in (None: the reference code's for the dataset). ``ipc``: HaBa's storage budget in images
    per class (None: what its storage fills, rounded up)."""

    experiment: int | None = None
    lr: float | None = None
    zca: float | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    ipc: int | None = None


@dataclass(frozen=True)
class Target:
    """The dataset the set is for and the normalization its images come in."""

    spec: DatasetSpec
    source_norm: Norm
    whitened: bool

    @property
    def renormalizes(self) -> bool:
        return not self.whitened and self.source_norm != (self.spec.mean, self.spec.std)

    def affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per channel ``(a, c)`` with ``ours = a * theirs + c`` (through [0, 1] pixels)."""
        (m_src, s_src), m, s = self.source_norm, torch.tensor(self.spec.mean), torch.tensor(self.spec.std)
        return torch.tensor(s_src) / s, (torch.tensor(m_src) - m) / s

    def images(self, x: Any, what: str, *, channels: int | None = None, renormalize: bool = True) -> torch.Tensor:
        """``x`` checked against the dataset (``[N, C, H, W]``, finite floats; ``channels``: another
        channel count) and, with ``renormalize``, mapped into our normalization."""
        x = _tensor(x, what)
        c = self.spec.channels if channels is None else channels
        want = (c, *self.spec.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != want:
            raise ForeignSetError(f"{what} has shape {_shape(x)}; {self.spec.name} images are "
                                  f"N x {'x'.join(map(str, want))} (is --dataset right?)")
        if not x.is_floating_point():
            raise ForeignSetError(f"{what} holds {x.dtype} values; distilled images are floating-point")
        x = x.detach().float()
        if not bool(torch.isfinite(x).all()):
            raise ForeignSetError(f"{what} holds non-finite values (NaN or inf)")
        if self.renormalizes and renormalize:
            a, b = self.affine()
            x = x * a.view(1, -1, 1, 1) + b.view(1, -1, 1, 1)
        return x


@dataclass(frozen=True)
class Imported:
    """A reader's result: the set, the method that made it, the files read and other facts to record."""

    synset: Any
    method: str
    files: list[Path]
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Importer:
    """A registered format: ``read(path, target, options)``, which `ImportOptions` fields it takes,
    and the source normalization of each dataset where the reference code's differs from this
    library's spec (docs/import.md lists the files each reads)."""

    name: str
    read: Callable[[Path, Target, ImportOptions], Imported]
    options: tuple[str, ...] = ()
    normalization: Mapping[str, Norm] = field(default_factory=dict)


IMPORTERS: Registry[Importer] = Registry("source format")


# ----------------------------------------------------------------------------------------- loading
def _numpy_globals() -> list[Any]:
    """NumPy's scalar (under its NumPy 1 and 2 names), ``dtype`` and the dtype classes of numbers
    (NumPy >= 1.25 rebuilds a dtype as an instance of one): numbers, no code, no object dtype."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    scalar = core.multiarray.scalar

    def is_number(t: Any) -> bool:
        kind = getattr(t, "type", None)
        return isinstance(t, type) and issubclass(t, np.dtype) and isinstance(kind, type) and issubclass(
            kind, (np.number, np.bool_))

    numeric = dict.fromkeys(t for t in vars(getattr(np, "dtypes", object)).values() if is_number(t))
    return [np.dtype, (scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"), *numeric]


def load_foreign(path: Path) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with every failure as one line."""
    import pickle

    if path.is_dir():
        raise ForeignSetError(f"{path} is a folder; give the file")
    if not path.is_file():
        raise ForeignSetError(f"no such file: {path}")
    try:
        # torch warns (two lines) about a file's pickle protocol before refusing it: the refusal is ours to say
        with torch.serialization.safe_globals(_numpy_globals()), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        name = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if name:
            raise ForeignSetError(f"{path} holds objects that need code to load ({name.group(1)}); datadistill "
                                  "loads only tensors and plain containers (torch.load with weights_only=True) "
                                  "and never runs a file's code") from None
        raise ForeignSetError(f"{path} is not a file written by torch.save, or it is damaged") from None
    except EOFError:
        raise ForeignSetError(f"{path} is empty or cut short") from None
    except RuntimeError as e:  # e.g. the zip reader on a damaged archive
        raise ForeignSetError(f"{path} is not a readable torch.save file ({str(e).splitlines()[0]})") from None


def _tensor(x: Any, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ForeignSetError(f"{what} is a {type(x).__name__}, not a tensor")
    return x.detach()


def _shape(x: torch.Tensor) -> str:
    return "x".join(map(str, x.shape)) or "a scalar"


def _class_labels(y: Any, what: str, n: int, num_classes: int) -> torch.Tensor:
    """Integer class labels ``[n]`` in ``0..num_classes-1``."""
    y = _tensor(y, what)
    if y.ndim == 2 and y.is_floating_point():
        raise ForeignSetError(f"{what} holds {_shape(y)} label vectors, not class indices (a DATM file? use "
                              "--from datm)")
    if y.ndim != 1 or y.is_floating_point() or y.dtype == torch.bool:
        raise ForeignSetError(f"{what} must be {n} integer class indices, got {y.dtype} of shape {_shape(y)}")
    if y.numel() != n:
        raise ForeignSetError(f"{what} has {y.numel()} labels for {n} images")
    if n and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ForeignSetError(f"{what} has labels {int(y.min())}..{int(y.max())}; the dataset has classes "
                              f"0..{num_classes - 1} (is --dataset right?)")
    return y.long()


def _by_class(images: torch.Tensor, labels: torch.Tensor, num_classes: int,
              what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels sorted by class (stable: the order within a class is kept), every class
    holding the same number of images, as `PixelSet` stores them."""
    counts = torch.bincount(labels, minlength=num_classes)
    if int(counts.min()) == 0 or not bool((counts == counts[0]).all()):
        raise ForeignSetError(f"{what}: images per class {counts.tolist()}; a distilled set has the same number "
                              "of images for every class")
    order = torch.argsort(labels, stable=True)
    return images[order], labels[order]


def _positional_labels(n: int, num_classes: int, what: str) -> torch.Tensor:
    """Class labels of ``n`` images stored class by class (the reference code's order)."""
    if n == 0 or n % num_classes:
        raise ForeignSetError(f"{what} holds {n} images, not a whole number per class of the dataset's "
                              f"{num_classes} classes (is --dataset right?)")
    return torch.arange(num_classes).repeat_interleave(n // num_classes)


def _positive_lr(value: Any, what: str) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ForeignSetError(f"{what} must hold one step size, got shape {_shape(value)}")
        value = float(value.detach().reshape(()))
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ForeignSetError(f"{what} must be a number, got {type(value).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise ForeignSetError(f"{what} is {value}; a step size must be a positive number")
    return float(value)


ITERATION_FILE = re.compile(r"^images_(best|\d+)\.pt$")


def _images_file(path: Path, fmt: str, folders: tuple[str, ...] = ("",)) -> tuple[Path, str]:
    """``(images file, its tag)``: ``path`` itself (``images_best.pt`` or ``images_<it>.pt``), or
    ``images_best.pt`` in the folder ``path`` (or in one of its sub-folders ``folders``)."""
    if path.is_dir():
        for sub in folders:
            candidate = path / sub / "images_best.pt"
            if candidate.is_file():
                return candidate, "best"
        raise ForeignSetError(f"{path} holds no images_best.pt; give the images file ({fmt} writes "
                              "images_best.pt and images_<iteration>.pt)")
    if path.name.startswith("images_zca_"):
        raise ForeignSetError(f"{path.name} is the un-whitened copy the code saves for viewing; import "
                              f"{path.name.replace('images_zca_', 'images_')} with --zca 0.1 instead")
    m = ITERATION_FILE.match(path.name)
    if not m:
        raise ForeignSetError(f"{path.name}: {fmt} names its images images_best.pt or images_<iteration>.pt; give one "
                              "of those (its other files are found beside it)")
    return path, m.group(1)


def _beside(images: Path, name: str) -> Path:
    p = images.with_name(name)
    if not p.is_file():
        raise ForeignSetError(f"{images.name} needs {name} beside it, and {p} does not exist")
    return p


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


