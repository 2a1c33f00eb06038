"""ZCA whitening of a dataset, as trajectory matching uses it (MTT, Cazenavette et al., CVPR 2022).

MTT whitens CIFAR-10/100 and Tiny ImageNet with kornia's ``ZCAWhitening(eps=0.1)``, fitted once
on the whole training set and applied to the training and the test images alike. The math:

- flatten every image to a row ``x`` in ``R^D`` (``D = C*H*W``); ``mu`` is the mean row;
- ``Sigma = (X - mu)^T (X - mu) / (N - 1)``, the unbiased covariance, with eigendecomposition
  ``Sigma = U diag(S) U^T``;
- whitening ``W = U diag(1 / sqrt(S + eps)) U^T`` and its inverse ``U diag(sqrt(S + eps)) U^T``;
- ``whiten(x) = (x - mu) W`` (``W`` is symmetric), ``unwhiten(z) = z W^-1 + mu``.

``eps`` (here ``regularization``) damps the directions of small variance; with ``eps = 0`` and
``D > N`` the covariance is singular and whitening is undefined.

One fact of the reference to keep: with ``--zca`` MTT feeds kornia the images in [0, 1] (``ToTensor``
only, no per-channel normalization), and ``eps = 0.1`` is relative to that scale. This library hands
out normalized images, so `whiten_dataset` fits in [0, 1] pixel units (``spec.denormalize``) and folds
the normalization into the stored transform: the `ZCA` it returns takes and gives normalized images,
and whitening a normalized image equals MTT's whitening of the raw one.

The fit runs in float64 (covariance accumulated batch by batch, ``torch.linalg.eigh``); applying the
transform runs in float32, batch by batch, so memory stays at one batch of rows beside the output.
"""

from __future__ import annotations

import dataclasses
import math
import weakref
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import UserError
from .spec import ZCA, DatasetSpec, LoadedDataset, RealData

KEY = ZCA  # the file metadata's entry of the transform (a spec says it through `DataRef.zca`)
BATCH = 4096  # rows per batch when fitting or applying


class ZCAError(UserError, ValueError):
    """Whitened and unwhitened data (or two different whitenings) would be mixed."""


@dataclass
class ZCA:
    """An affine whitening transform of flattened images: ``apply(x) = (x - mean) @ matrix``.

    ``mean`` is ``[D]``, ``matrix`` and ``inverse`` are ``[D, D]`` (float32; ``inverse`` is derived
    from ``matrix`` in float64 on first use when it was not given, e.g. after loading a file).
    ``regularization`` is the ``eps`` it was fitted with.
    """

    mean: torch.Tensor
    matrix: torch.Tensor
    regularization: float
    _inverse: torch.Tensor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        d = self.mean.numel()
        if self.mean.shape != (d,) or self.matrix.shape != (d, d):
            raise ZCAError(f"a ZCA transform needs mean [D] and matrix [D, D], got {tuple(self.mean.shape)} and "
                           f"{tuple(self.matrix.shape)}")
        if self._inverse is not None and self._inverse.shape != (d, d):
            raise ZCAError(f"inverse must be [{d}, {d}], got {tuple(self._inverse.shape)}")

    @property
    def dim(self) -> int:
        return int(self.mean.numel())

    @property
    def inverse(self) -> torch.Tensor:
        if self._inverse is None:
            self._inverse = torch.linalg.inv(self.matrix.double()).float()
        return self._inverse

    def apply(self, x: torch.Tensor, batch_size: int = BATCH) -> torch.Tensor:
        """Whiten images ``[N, C, H, W]`` (normalized like the dataset) -> same shape, float32."""
        return _affine(x, self.matrix, self.mean, None, batch_size, self.dim)

    def invert(self, z: torch.Tensor, batch_size: int = BATCH) -> torch.Tensor:
        """Whitened images -> normalized images (to view a whitened set; ``spec.denormalize`` next)."""
        return _affine(z, self.inverse, None, self.mean, batch_size, self.dim)

    def tensors(self) -> dict[str, torch.Tensor]:
        """What a file stores: ``mean`` and ``matrix`` (the inverse is derived on load, halving the size)."""
        return {"mean": self.mean.detach().cpu().contiguous(), "matrix": self.matrix.detach().cpu().contiguous()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], regularization: float) -> "ZCA":
        missing = sorted({"mean", "matrix"} - set(tensors))
        if missing:
            raise ZCAError(f"a stored ZCA transform needs the tensors mean and matrix; missing: {', '.join(missing)}")
        inv = tensors.get("inverse")
        return cls(tensors["mean"].float(), tensors["matrix"].float(), float(regularization),
                   inv.float() if inv is not None else None)

    def to(self, device: torch.device | str) -> "ZCA":
        inv = self._inverse.to(device) if self._inverse is not None else None
        return ZCA(self.mean.to(device), self.matrix.to(device), self.regularization, inv)

    def same_as(self, other: "ZCA", tol: float = 1e-4) -> bool:
        """The same transform (up to float rounding of a refit on the same data)."""
        if other is self:
            return True
        if other.dim != self.dim or other.regularization != self.regularization:
            return False
        dev = self.matrix.device
        scale = float(self.matrix.abs().max()) or 1.0
        return (torch.allclose(self.mean, other.mean.to(dev), rtol=tol, atol=tol)
                and torch.allclose(self.matrix, other.matrix.to(dev), rtol=tol, atol=tol * scale))


def _affine(x: torch.Tensor, matrix: torch.Tensor, before: torch.Tensor | None, after: torch.Tensor | None,
            batch_size: int, dim: int) -> torch.Tensor:
    """``((x - before) @ matrix + after)`` on flattened rows, batch by batch, in float32."""
    flat = x.reshape(x.shape[0], -1)
    if flat.shape[1] != dim:
        raise ZCAError(f"the ZCA transform is for images of {dim} values, got images of shape {tuple(x.shape[1:])}")
    m = matrix.to(device=x.device, dtype=torch.float32)
    b = before.to(device=x.device, dtype=torch.float32) if before is not None else None
    a = after.to(device=x.device, dtype=torch.float32) if after is not None else None
    out = torch.empty(flat.shape, dtype=torch.float32, device=x.device)
    for i in range(0, flat.shape[0], batch_size):
        rows = flat[i : i + batch_size].float()
        y = (rows - b if b is not None else rows) @ m
        out[i : i + batch_size] = y + a if a is not None else y
    return out.view(x.shape)


def _check_regularization(regularization: float) -> float:
    r = float(regularization)
    if not (r > 0 and math.isfinite(r)):
        raise ZCAError(f"ZCA regularization must be a positive number (MTT uses 0.1), got {regularization!r}")
    return r


def _pixel_map(spec: DatasetSpec | None, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Per-value ``(std, mean)`` rows ``[D]`` (float64) that map normalized images to [0, 1]."""
    if spec is None:
        return None
    c, hw = shape[0], math.prod(shape[1:])
    if c != spec.channels:
        raise ZCAError(f"{spec.name} has {spec.channels} channel(s), the images {c}")
    s = torch.tensor(spec.std, dtype=torch.float64).repeat_interleave(hw)
    m = torch.tensor(spec.mean, dtype=torch.float64).repeat_interleave(hw)
    return s, m


def fit_zca(images: torch.Tensor, regularization: float = 0.1, *, spec: DatasetSpec | None = None,
            batch_size: int = BATCH) -> ZCA:
    """Fit a ZCA whitening transform on ``images [N, C, H, W]`` (float64, on the images' device).

    With ``spec``, the images are normalized by ``spec`` and the fit happens in [0, 1] pixel units,
    as MTT's (``regularization`` is relative to that scale); the returned transform still takes and
    gives normalized images. Without it, the fit is on the values as given.
    """
    r = _check_regularization(regularization)
    if images.ndim != 4:
        raise ZCAError(f"images must be [N, C, H, W], got shape {tuple(images.shape)}")
    n = images.shape[0]
    if n < 2:
        raise ZCAError(f"fitting ZCA needs at least 2 images, got {n}")
    flat = images.reshape(n, -1)
    d, dev = flat.shape[1], images.device
    pix = _pixel_map(spec, tuple(images.shape[1:]))
    s, m = (pix[0].to(dev), pix[1].to(dev)) if pix is not None else (None, None)

    def rows(i: int) -> torch.Tensor:
        x = flat[i : i + batch_size].double()
        return x * s + m if s is not None else x

    total = torch.zeros(d, dtype=torch.float64, device=dev)
    for i in range(0, n, batch_size):
        total += rows(i).sum(0)
    mu = total / n
    cov = torch.zeros(d, d, dtype=torch.float64, device=dev)
    for i in range(0, n, batch_size):
        xc = rows(i) - mu
        cov.addmm_(xc.T, xc)
    cov /= n - 1
    evals, evecs = torch.linalg.eigh(cov)
    evals = evals.clamp_min(0) + r  # rounding can leave the smallest eigenvalues slightly negative
    w = (evecs * evals.rsqrt()) @ evecs.T
    w_inv = (evecs * evals.sqrt()) @ evecs.T
    if s is not None:  # fold the normalization in: x01 = x * s + m, so (x01 - mu) W = (x - (mu - m) / s) diag(s) W
        mean, w, w_inv = (mu - m) / s, s[:, None] * w, w_inv / s[None, :]
    else:
        mean = mu
    return ZCA(mean.float(), w.float(), r, w_inv.float())


# ---------------------------------------------------------------------------------------- datasets

def is_whitened(data: LoadedDataset) -> bool:
    return getattr(data, "zca", None) is not None or data.spec.ref.zca is not None


def unwhitened_spec(spec: DatasetSpec) -> DatasetSpec:
    """``spec`` without its ZCA entry: its `DataRef` then loads the raw dataset."""
    return spec if spec.ref.zca is None else spec.with_ref(spec.ref.with_(zca=None))


def apply_zca(data: LoadedDataset, zca: ZCA) -> LoadedDataset:
    """``data`` with train and test whitened by a given transform (e.g. one stored with a distilled
    set): nothing is refitted. Not cached (the result would keep the transform alive); convert once
    and reuse the result."""
    if is_whitened(data):
        raise ZCAError(f"{data.spec.name} is already ZCA-whitened; pass the unwhitened dataset")
    if zca.dim != math.prod(data.spec.shape):
        raise ZCAError(f"the ZCA transform is for images of {zca.dim} values; {data.spec.name} images have "
                       f"{math.prod(data.spec.shape)} ({'x'.join(map(str, data.spec.shape))})")
    return _whitened(data, zca)


def whiten_dataset(data: LoadedDataset, regularization: float) -> LoadedDataset:
    """Fit ZCA on ``data.train`` (MTT's way, see the module docstring) and whiten train and test
    with it. The result's spec is ``data.spec`` with ``ref.zca = r`` (`DataRef`) and it
    carries the fitted transform as ``.zca``. Cached per (data, regularization) in this process, so
    a second call with the same loaded dataset does not refit; do not modify the tensors."""
    r = _check_regularization(regularization)
    if is_whitened(data):
        raise ZCAError(f"{data.spec.name} is already ZCA-whitened; pass the unwhitened dataset")

    def compute() -> LoadedDataset:
        return _whitened(data, fit_zca(data.train.images, r, spec=data.spec))

    return _cached(data, ("fit", r, data.spec.mean, data.spec.std), compute)


def match_whitening(data: LoadedDataset, zca: ZCA | None) -> LoadedDataset:
    """The real data as a set distilled with transform ``zca`` (``None``: no whitening) sees it.

    Unwhitened ``data`` is whitened with ``zca`` (the stored transform, never a refit); data that is
    already whitened passes only if it was whitened the same way. Mixing is refused.
    """
    if zca is None:
        if is_whitened(data):
            raise ZCAError(f"the set was distilled on unwhitened {data.spec.name}, but the data given is "
                           "ZCA-whitened; pass the dataset as load_dataset returns it")
        return data
    if not is_whitened(data):
        return apply_zca(data, zca)
    theirs = getattr(data, "zca", None)
    if theirs is not None and theirs.same_as(zca):
        return data
    raise ZCAError(f"the data given is whitened differently from the set (set: regularization {zca.regularization}; "
                   f"data: zca {data.spec.ref.zca}); pass the unwhitened dataset and the set's own transform is "
                   "applied")


def _whitened(data: LoadedDataset, zca: ZCA) -> LoadedDataset:
    spec = data.spec.with_ref(data.spec.ref.with_(zca=float(zca.regularization)))
    train = RealData(zca.apply(data.train.images), data.train.labels, data.train.num_classes)
    test = RealData(zca.apply(data.test.images), data.test.labels, data.test.num_classes)
    return dataclasses.replace(data, spec=spec, train=train, test=test, zca=zca)


# In-process cache of `whiten_dataset`: keyed by the identity of the source tensors, and dropped
# as soon as one of them is garbage-collected, so an id is never reused for a stale entry and a
# whitened copy never outlives its source.
_CACHE: dict[tuple[Any, ...], LoadedDataset] = {}


def _cached(data: LoadedDataset, what: tuple[Any, ...], compute) -> LoadedDataset:
    sources = (data.train.images, data.test.images)
    key = (*(id(o) for o in sources), *what)
    hit = _CACHE.get(key)
    if hit is not None:
        return hit
    out = compute()
    _CACHE[key] = out
    for o in sources:
        weakref.finalize(o, _CACHE.pop, key, None)
    return out


def clear_cache() -> None:
    _CACHE.clear()
