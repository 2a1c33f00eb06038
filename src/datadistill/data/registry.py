"""The dataset registry: each entry knows how to load, check and prepare one dataset."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..registry import Registry
from .spec import LoadedDataset


class DatasetMissingError(FileNotFoundError):
    """The dataset's files are not under the data root; the message names the prepare command."""


class DatasetOptionError(TypeError, ValueError):
    """``load_dataset`` got an option the dataset does not take (the message lists the valid ones) or
    a value the dataset cannot use."""


class DatasetDownloadError(RuntimeError):
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


VALIDATION = "validation"


def load_dataset(name: str, root: str | os.PathLike[str] | None = None, **kwargs: Any) -> LoadedDataset:
    """Load a registered dataset into memory (cached per process: do not modify its tensors).

    Unknown names raise an error that lists the valid ones; a dataset that is not on disk raises
    `DatasetMissingError` naming the command that prepares it.

    Every dataset takes the option ``validation=FRACTION``: that fraction of each class of the
    training set (the same images on every call) becomes the test part, and the rest the training
    part, so that hyper-parameters are chosen without looking at the test set (`validation_split`).
    """
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
    spec = dataclasses.replace(data.spec, extra={**data.spec.extra, VALIDATION: float(fraction)})

    def part(idx: torch.Tensor) -> RealData:
        idx = idx.to(data.train.images.device)
        return RealData(data.train.images[idx], data.train.labels[idx], spec.num_classes)

    return dataclasses.replace(data, spec=spec, train=part(kept_idx), test=part(held_idx))


def clear_cache() -> None:
    _CACHE.clear()
