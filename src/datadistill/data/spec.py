"""Dataset description (`DatasetSpec`) and the in-memory training/test tensors (`RealData`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch


# the provenance entries of a spec's ``extra`` (every other entry is a load option of the dataset)
ZCA, VALIDATION, SPLIT = "zca", "validation", "split"


@dataclass(frozen=True)
class DataRef:
    """Which data a set, an expert or a record was made from, typed: the dataset's registry ``name``,
    the ``options`` that load it (a procedural set's sizes, an image folder's size and statistics),
    the privacy ``split`` (``"POOL:SEED:SIDE"``, one half of a pool), the ``validation`` fraction held
    out of the training set, and the ``zca`` regularization the data were whitened with.

    A spec stores it in its ``extra`` mapping (the key files have always carried, so every file
    written before still reads); `DatasetSpec.ref` reads it back, `DatasetSpec.with_ref` writes it,
    and nothing else looks inside ``extra``.
    """

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    split: str | None = None
    validation: float | None = None
    zca: float | None = None

    @classmethod
    def of(cls, spec: "DatasetSpec") -> "DataRef":
        extra = dict(spec.extra)
        zca = extra.pop(ZCA, None)
        validation = extra.pop(VALIDATION, None)
        split = extra.pop(SPLIT, None)
        return cls(spec.name, extra, None if split is None else str(split),
                   None if validation is None else float(validation),
                   None if zca is None else float(zca["regularization"] if isinstance(zca, dict) else zca))

    def extra(self) -> dict[str, Any]:
        """The entries of a spec's ``extra`` (`of`'s inverse): the load options and the ZCA."""
        out = self.load_options()
        if self.zca is not None:
            out[ZCA] = {"regularization": self.zca}
        return out

    def load_options(self) -> dict[str, Any]:
        """What ``load_dataset(name, root, **options)`` takes to give these data before whitening."""
        out = dict(self.options)
        if self.split is not None:
            out[SPLIT] = self.split
        if self.validation is not None:
            out[VALIDATION] = self.validation
        return out

    def with_(self, **changes: Any) -> "DataRef":
        return replace(self, **changes)


@dataclass(frozen=True)
class DatasetSpec:
    """What a model and a synthetic set need to know about a dataset.

    ``mean``/``std`` are the per-channel normalization applied to every image the library hands
    out; ``allow_flip`` says whether a horizontal flip keeps the label (not for digits).

    ``allow_flip`` was ``flip`` before (a word DSA also uses, for a flip's probability): spec dicts
    written with ``flip`` (distilled files, expert shards) still load through `from_dict`.
    """

    name: str
    num_classes: int
    channels: int
    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]
    allow_flip: bool = True
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"{self.name}: mean/std need {self.channels} values each")
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"{self.name}: {len(self.class_names)} class names for {self.num_classes} classes")

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, *self.image_size)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> normalized."""
        m = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        s = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        return (x - m) / s

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized images -> [0, 1] scale (not clamped)."""
        m = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        s = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        return x * s + m

    @property
    def ref(self) -> DataRef:
        """Which data these are (`DataRef`): name, load options, split, validation fraction, ZCA."""
        return DataRef.of(self)

    def with_ref(self, ref: DataRef) -> "DatasetSpec":
        """This spec with ``ref``'s split, validation fraction, ZCA and options."""
        return replace(self, extra=ref.extra())

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["image_size"] = list(self.image_size)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        d["class_names"] = list(self.class_names)
        return d

    def cache_key(self) -> dict[str, Any]:
        """The spec as cache folders hash it (`cache.keyed_dir`): `to_dict` with ``allow_flip`` under its
        old name ``flip``, so that folders keyed before the rename are still found."""
        d = self.to_dict()
        return {k if k != "allow_flip" else "flip": v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DatasetSpec":
        return cls(
            name=d["name"],
            num_classes=int(d["num_classes"]),
            channels=int(d["channels"]),
            image_size=tuple(int(v) for v in d["image_size"]),  # type: ignore[arg-type]
            mean=tuple(float(v) for v in d["mean"]),
            std=tuple(float(v) for v in d["std"]),
            class_names=tuple(str(v) for v in d["class_names"]),
            allow_flip=bool(d.get("allow_flip", d.get("flip", True))),  # "flip": written before the rename
            extra=dict(d.get("extra", {})),
        )


class RealData:
    """Normalized images ``[N, C, H, W]`` (float32) and labels ``[N]`` (int64) held in memory.

    A per-class index is built once, so that ``sample(c, n, generator)`` draws a batch of class
    ``c`` with one ``randperm`` and one gather, never a Python loop over items.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> None:
        if images.ndim != 4:
            raise ValueError(f"images must be [N, C, H, W], got shape {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must be [N] with N={images.shape[0]}, got {tuple(labels.shape)}")
        self.images = images
        self.labels = labels.long()
        self.num_classes = num_classes
        order = torch.argsort(self.labels, stable=True)
        counts = torch.bincount(self.labels, minlength=num_classes)
        self._order = order
        self._counts = counts
        self._offsets = torch.cat([torch.zeros(1, dtype=torch.long, device=counts.device), counts.cumsum(0)])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device: torch.device | str) -> "RealData":
        return RealData(self.images.to(device), self.labels.to(device), self.num_classes)

    def class_count(self, c: int) -> int:
        return int(self._counts[c])

    def class_indices(self, c: int) -> torch.Tensor:
        """Indices (into ``images``) of all examples of class ``c``, in dataset order."""
        return self._order[self._offsets[c] : self._offsets[c + 1]]

    def sample_indices(self, c: int, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``min(n, count)`` distinct random indices of class ``c``."""
        count = self.class_count(c)
        if count == 0:
            raise ValueError(f"class {c} has no training examples")
        perm = torch.randperm(count, generator=generator)[: min(n, count)]
        return self.class_indices(c)[perm.to(self._order.device)]

    def sample(self, c: int, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """A batch of ``min(n, count)`` distinct random images of class ``c``."""
        return self.images[self.sample_indices(c, n, generator)]

    def sample_classes(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` images of every class stacked class by class: ``([C*n, ...], [C*n])``.

        Every class must hold at least ``n`` examples (so that the batch reshapes to ``[C, n, ...]``).
        """
        short = [c for c in range(self.num_classes) if self.class_count(c) < n]
        if short:
            n_min = min(self.class_count(c) for c in range(self.num_classes))
            raise ValueError(f"classes {short} have fewer than {n} examples; use at most {n_min} per class")
        idx = torch.cat([self.sample_indices(c, n, generator) for c in range(self.num_classes)])
        return self.images[idx], self.labels[idx]

    def subset(self, indices: torch.Tensor) -> "RealData":
        return RealData(self.images[indices], self.labels[indices], self.num_classes)


@dataclass
class LoadedDataset:
    """A dataset loaded into memory: its spec and the train/test tensors.

    ``zca`` is the fitted `datadistill.data.zca.ZCA` transform when the images are ZCA-whitened
    (see `whiten_dataset`), else ``None``.
    """

    spec: DatasetSpec
    train: RealData
    test: RealData
    zca: Any = None
