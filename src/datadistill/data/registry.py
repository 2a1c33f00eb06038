"""The dataset registry: each entry knows how to load, check and prepare one dataset."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import UserError
from ..registry import Registry
from .spec import SPLIT, VALIDATION, DataRef, LoadedDataset


class DatasetMissingError(UserError, FileNotFoundError):
    """The dataset's files are not under the data root; the message names the prepare command."""


class DatasetOptionError(UserError, TypeError, ValueError):
    """``load_dataset`` got an option the dataset does not take (the message lists the valid ones) or
    a value the dataset cannot use."""


class DatasetDownloadError(UserError, RuntimeError):
    """``prepare`` could not fetch the files (no network, host down, bad checksum); the message says
    which files to place under the data root by hand."""


@dataclass(frozen=True)
class DatasetEntry:
    """One registered dataset.

    ``load(root, **kw)`` returns the in-memory dataset or raises `DatasetMissingError`;
    ``available(root)`` is a cheap file check; ``prepare(root)`` fetches the files (torchvision's
    download first, then any offline mirror) and returns a sentence on what it did, or is ``None``
    for datasets a user must supply; ``instructions`` says how to get the data by hand.
    """

    name: str
    load: Callable[..., LoadedDataset]
    available: Callable[[Path], bool]
    prepare: Callable[[Path], str] | None
    instructions: str
    options: tuple[str, ...] = field(default=())  # keyword arguments ``load`` accepts


DATASETS: Registry[DatasetEntry] = Registry("dataset")


def register_dataset(entry: DatasetEntry, *aliases: str) -> DatasetEntry:
    DATASETS.add(entry.name, entry, aliases=aliases)
    return entry


def in_memory(name: str, load: Callable[..., LoadedDataset], source: str,
              options: tuple[str, ...] = ()) -> DatasetEntry:
    """The entry of a dataset made in memory (nothing to download or prepare): ``source`` says
    where it comes from."""
    return DatasetEntry(name=name, load=load, available=lambda root: True,
                        prepare=lambda root: f"{name}: {source}, nothing to prepare",
                        instructions=source, options=options)


def default_root() -> Path:
    """``$DATADISTILL_DATA`` if set, else ``~/.cache/datadistill/data``."""
    env = os.environ.get("DATADISTILL_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "datadistill" / "data"


def resolve_root(root: str | os.PathLike[str] | None) -> Path:
    return Path(root).expanduser() if root is not None else default_root()


def missing(name: str, root: Path, detail: str = "") -> DatasetMissingError:
    entry = DATASETS.get(name)
    how = (
        f"run `datadistill data prepare {entry.name} --root {root}`"
        if entry.prepare is not None
        else entry.instructions
    )
    extra = f" ({detail})" if detail else ""
    return DatasetMissingError(f"dataset {entry.name!r} is not under {root}{extra}: {how}")


_CACHE: dict[tuple[Any, ...], LoadedDataset] = {}




def load_dataset(name: str, root: str | os.PathLike[str] | None = None, **kwargs: Any) -> LoadedDataset:
    """Load a registered dataset into memory (cached per process: do not modify its tensors).

    Unknown names raise an error that lists the valid ones; a dataset that is not on disk raises
    `DatasetMissingError` naming the command that prepares it.

    Every dataset takes the option ``validation=FRACTION``: that fraction of each class of the
    training set (the same images on every call) becomes the test part, and the rest the training
    part, so that hyper-parameters are chosen without looking at the test set (`validation_split`).

    And the option ``split="POOL:SEED:SIDE"``: the training part is half ``SIDE`` (0 or 1) of split
    ``SEED`` of a fixed pool of ``POOL`` training images per class (`split_indices`), the test part
    unchanged: a membership-inference experiment distils and trains on known halves (`studies.privacy`).
    """
    if SPLIT in kwargs:
        kwargs = dict(kwargs)
        value = kwargs.pop(SPLIT)
        if VALIDATION in kwargs:
            raise DatasetOptionError("the options split and validation do not combine; give one")
        return half_split(load_dataset(name, root, **kwargs), value)
    if VALIDATION in kwargs:
        kwargs = dict(kwargs)
        fraction = kwargs.pop(VALIDATION)
        return validation_split(load_dataset(name, root, **kwargs), fraction)
    entry = DATASETS.get(name)
    unknown = set(kwargs) - set(entry.options)
    if unknown:
        valid = ", ".join(entry.options) or "none"
        raise DatasetOptionError(f"dataset {entry.name!r} takes no option(s) {sorted(unknown)}; valid options: {valid}")
    path = resolve_root(root)
    key = (entry.name, str(path), tuple(sorted((k, str(v)) for k, v in kwargs.items())))
    if key not in _CACHE:
        try:
            _CACHE[key] = entry.load(path, **kwargs)
        except (TypeError, ValueError) as e:  # with options given: a value the loader cannot use
            if not kwargs or isinstance(e, DatasetOptionError):
                raise
            raise DatasetOptionError(f"dataset {entry.name!r} with options {kwargs}: {e}") from e
    return _CACHE[key]


def load_ref(ref: DataRef, root: str | os.PathLike[str] | None = None) -> LoadedDataset:
    """The data a `DataRef` names (its options, split and validation fraction), before whitening: a
    set's ZCA transform is stored in its file and applied by `zca.match_whitening`."""
    return load_dataset(ref.name, root, **ref.load_options())


def validation_split(data: LoadedDataset, fraction: float) -> LoadedDataset:
    """``data`` with ``fraction`` of each class of its training set held out as the test part: per
    class, a fixed random subset (at least one image, never all), the same on every machine."""
    import dataclasses

    import torch

    from .spec import RealData

    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise DatasetOptionError(f"validation={fraction!r}: give the held-out fraction of the training set, "
                                 "between 0 and 1 (e.g. 0.1)")
    g = torch.Generator().manual_seed(0)
    labels = data.train.labels.cpu()
    held, kept = [], []
    for c in range(data.spec.num_classes):
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = min(max(1, round(fraction * len(idx))), len(idx) - 1) if len(idx) > 1 else 0
        held.append(idx[:k])
        kept.append(idx[k:])
    held_idx, kept_idx = torch.cat(held).sort().values, torch.cat(kept).sort().values
    spec = data.spec.with_ref(data.spec.ref.with_(validation=float(fraction)))

    def part(idx: torch.Tensor) -> RealData:
        idx = idx.to(data.train.images.device)
        return RealData(data.train.images[idx], data.train.labels[idx], spec.num_classes)

    return dataclasses.replace(data, spec=spec, train=part(kept_idx), test=part(held_idx))


def clear_cache() -> None:
    _CACHE.clear()


def parse_split(value: Any) -> tuple[int, int, int]:
    """``"POOL:SEED:SIDE"`` -> ``(pool, seed, side)`` (DatasetOptionError naming the form otherwise)."""
    parts = str(value).split(":")
    try:
        pool, seed, side = (int(p) for p in parts)
    except ValueError:
        pool = seed = side = -1
    if len(parts) != 3 or pool < 2 or seed < 0 or side not in (0, 1):
        raise DatasetOptionError(f"split={value!r}: give POOL:SEED:SIDE, e.g. 100:0:1 (half 1 of split 0 of a pool "
                                 "of 100 training images per class; POOL >= 2, SEED >= 0, SIDE 0 or 1)")
    return pool, seed, side


def split_indices(labels: "torch.Tensor", num_classes: int, pool: int, seed: int):
    """Indices into a training set with ``labels``: ``(pool, half0, half1)``, each sorted. The pool is
    ``pool`` images per class drawn with a fixed generator (the same pool for every ``seed``); split
    ``seed`` halves it per class at random (``pool // 2`` images of each class in half 0). Every pool
    image is in exactly one half of every split."""
    import torch

    labels = labels.cpu()
    g = torch.Generator().manual_seed(0)
    per_class = []
    for c in range(num_classes):
        idx = (labels == c).nonzero().flatten()
        if len(idx) < pool:
            raise DatasetOptionError(f"split: class {c} has {len(idx)} training images, fewer than the pool of {pool}")
        per_class.append(idx[torch.randperm(len(idx), generator=g)[:pool]])
    gs = torch.Generator().manual_seed(1_000_003 * (seed + 1))
    halves: tuple[list, list] = ([], [])
    for idx in per_class:
        idx = idx[torch.randperm(len(idx), generator=gs)]
        halves[0].append(idx[: pool // 2])
        halves[1].append(idx[pool // 2:])
    cat = lambda parts: torch.cat(parts).sort().values  # noqa: E731
    return cat(per_class), cat(halves[0]), cat(halves[1])


def half_split(data: LoadedDataset, value: Any) -> LoadedDataset:
    """``data`` whose training part is one half of a split of a pool (the ``split`` option)."""
    import dataclasses

    from .spec import RealData

    pool, seed, side = parse_split(value)
    _, *halves = split_indices(data.train.labels, data.spec.num_classes, pool, seed)
    idx = halves[side].to(data.train.images.device)
    spec = data.spec.with_ref(data.spec.ref.with_(split=f"{pool}:{seed}:{side}"))
    train = RealData(data.train.images[idx], data.train.labels[idx], spec.num_classes)
    return dataclasses.replace(data, spec=spec, train=train)
