"""The sets the studies compare (distilled-set files and the random baseline) and a memory of some
classes of a set."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from ..data import LoadedDataset, load_dataset
from ..data.spec import RealData
from ..seeding import make_generator
from ..synset.base import SetFeatures
from .base import StudyError

RANDOM = "random"


@dataclass(frozen=True)
class SetSource:
    """A set an application compares: a distilled-set file, or ``random`` (real images drawn per class
    from the training set, seeded, made inside each job)."""

    name: str
    path: str | None = None
    sha256: str | None = None  # the file's content: a job's result is kept only for the same bytes

    @property
    def is_file(self) -> bool:
        return self.path is not None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "sha256": self.sha256}


def parse_sets(items: Sequence[str], *, dataset: str | None = None) -> list[SetSource]:
    """``NAME=FILE`` or ``FILE`` (named by the file's method) -> sources, checked: the files exist and
    are distilled-set files of one dataset (``dataset`` when given), the names are unique and
    file-safe, and ``random`` is left to the baseline."""
    from ..synset.io import read_meta

    out: list[SetSource] = []
    for item in items:
        name, eq, path = item.partition("=")
        if not eq:
            name, path = "", item
        if not Path(path).is_file():
            raise StudyError(f"--set {item!r}: no such file {path!r} (give NAME=FILE with a distilled-set file)")
        meta = read_meta(path)
        name = name or str(meta.get("method", Path(path).stem))
        if name == RANDOM and not eq:  # a random-subset file named by its method: not the baseline
            name = "random-file"
        if not re.fullmatch(r"[A-Za-z0-9_.+-]+", name):
            raise StudyError(f"--set {item!r}: a set name may hold letters, digits and _ . + - only")
        if name == RANDOM:
            raise StudyError(f"--set {item!r}: the name 'random' is the baseline's (drawn per job); name the file otherwise")
        out.append(SetSource(name, str(path), hashlib.sha256(Path(path).read_bytes()).hexdigest()))
    names = [s.name for s in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise StudyError(f"set names must be unique; repeated: {', '.join(dup)} (give NAME=FILE)")
    if dataset is not None:
        check_datasets(out, dataset)
    return out


def check_datasets(sources: Sequence[SetSource], dataset: str) -> None:
    """Every file among ``sources`` was distilled on ``dataset``."""
    from ..synset.io import read_meta

    for s in sources:
        if s.is_file:
            set_dataset = (read_meta(s.path).get("dataset") or {}).get("name")
            if set_dataset != dataset:
                raise StudyError(f"--set {s.name}={s.path} was distilled on {set_dataset!r}, not {dataset!r}")


def file_ipc(path: str) -> int:
    """Images per class a file's set holds (as `materialize` gives them)."""
    from ..synset import load_synset

    _, y = load_synset(path).synset.materialize()
    counts = torch.bincount(y.long())
    return int(counts.min())


def data_for(source: SetSource, dataset: str, root: str | None, device: str = "cpu"):
    """``(set file or None, real data as the set sees it)``: a file's dataset options and whitening."""
    from ..data.registry import load_ref
    from ..data.zca import match_whitening
    from ..synset import load_synset

    if not source.is_file:
        return None, load_dataset(dataset, root)
    f = load_synset(source.path, device=device)
    return f, match_whitening(load_ref(f.spec.ref, root), f.zca)


class MemorySet(SetFeatures):
    """Images of some classes with their class labels (and label vectors when the set had them): the
    set protocol the evaluator trains on (`evaluation.evaluate`), for any subset of classes. ``lr``: the
    set's learned step size, which a protocol with ``use_learned_lr`` trains at (None: the protocol's)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, soft_labels: torch.Tensor | None = None,
                 label_loss: str = "soft_ce", label_temperature: float = 1.0, lr: float | None = None) -> None:
        self.images, self.labels = images.detach(), labels.detach().long()
        self.soft_labels = None if soft_labels is None else soft_labels.detach()
        self.label_loss, self.label_temperature = label_loss, label_temperature
        self.lr = None if lr is None else float(lr)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def learned_lr(self) -> float | None:
        return self.lr

    def label_vectors(self) -> torch.Tensor | None:
        return self.soft_labels

    def hard(self) -> "MemorySet":
        """The same images and step size with class labels only (hard-label evaluation)."""
        return MemorySet(self.images, self.labels, lr=self.lr)

    def floats(self) -> int:
        """What the memory stores: its images and label vectors."""
        return int(self.images.numel()) + (0 if self.soft_labels is None else int(self.soft_labels.numel()))

    def batches(self, batch_size: int, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        targets = self.soft_labels if self.soft_labels is not None else self.labels
        perm = torch.randperm(len(self), generator=generator).to(self.images.device)
        for i in range(0, len(self), batch_size):
            idx = perm[i : i + batch_size]
            yield self.images[idx], targets[idx]


def file_memory(f: Any, classes: Sequence[int], per_class: int | None = None) -> MemorySet:
    """The images of ``classes`` of a loaded set file (``per_class``: the first that many of each), with
    the file's learned step size (MTT's, DATM's), which protocols with ``use_learned_lr`` train at."""
    synset = f.synset
    x, y = synset.materialize()
    soft = synset.label_vectors()
    keep = []
    for c in classes:
        idx = (y == c).nonzero().flatten()
        if per_class is not None:
            if len(idx) < per_class:
                raise StudyError(f"the set has {len(idx)} images of class {c}, fewer than {per_class}")
            idx = idx[:per_class]
        keep.append(idx)
    idx = torch.cat(keep)
    return MemorySet(x[idx], y[idx], None if soft is None else soft[idx],
                     synset.label_loss, synset.label_temperature, synset.learned_lr())


def random_memory(train: RealData, classes: Sequence[int], per_class: int, seed: int) -> MemorySet:
    """``per_class`` real images of each class, drawn with a generator of (``seed``, class): a class's
    images do not depend on which other classes are asked for."""
    xs, ys = [], []
    for c in classes:
        g = make_generator(seed, f"random-memory-{c}")
        idx = train.sample_indices(c, per_class, g)
        xs.append(train.images[idx])
        ys.append(train.labels[idx])
    return MemorySet(torch.cat(xs), torch.cat(ys))


def restrict_test(data: LoadedDataset, classes: Sequence[int]) -> LoadedDataset:
    """``data`` whose test part holds only the images of ``classes``."""
    import dataclasses

    labels = data.test.labels
    mask = torch.zeros_like(labels, dtype=torch.bool)
    for c in classes:
        mask |= labels == c
    test = RealData(data.test.images[mask], labels[mask], data.spec.num_classes)
    return dataclasses.replace(data, test=test)


# the ``sets`` field of a study that compares set files (its flag: ``--set NAME=FILE``, repeated)
SETS_FIELD = {"flag": "--set", "many": True, "parse": parse_sets, "metavar": "NAME=FILE",
              "help": "a distilled-set file to compare (repeat; FILE alone is named by its method)"}
