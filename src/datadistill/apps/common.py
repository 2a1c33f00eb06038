"""What the applications share: the sets they compare (distilled-set files and the random baseline),
a memory of some classes of a set, the grid of training jobs run through the executor (one result
file per job, so an application resumes where it stopped) and its JSON-lines records.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from ..config import ConfigError
from ..data import LoadedDataset, load_dataset
from ..data.spec import RealData
from ..executor import Executor, Task
from ..fileio import atomic_write_text
from ..paths import check_output_dir
from ..seeding import make_generator
from ..synset.base import SetFeatures

RANDOM = "random"
JOBS = "jobs"
RECORDS = "records.jsonl"


class AppError(ConfigError):
    """An application was asked for something it cannot do (bad sets, sizes or options)."""


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
            raise AppError(f"--set {item!r}: no such file {path!r} (give NAME=FILE with a distilled-set file)")
        meta = read_meta(path)
        name = name or str(meta.get("method", Path(path).stem))
        if name == RANDOM and not eq:  # a random-subset file named by its method: not the baseline
            name = "random-file"
        if not re.fullmatch(r"[A-Za-z0-9_.+-]+", name):
            raise AppError(f"--set {item!r}: a set name may hold letters, digits and _ . + - only")
        if name == RANDOM:
            raise AppError(f"--set {item!r}: the name 'random' is the baseline's (drawn per job); name the file otherwise")
        set_dataset = (meta.get("dataset") or {}).get("name")
        if dataset is not None and set_dataset != dataset:
            raise AppError(f"--set {item!r} was distilled on {set_dataset!r}, not {dataset!r}")
        out.append(SetSource(name, str(path), hashlib.sha256(Path(path).read_bytes()).hexdigest()))
    names = [s.name for s in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise AppError(f"set names must be unique; repeated: {', '.join(dup)} (give NAME=FILE)")
    return out


def file_ipc(path: str) -> int:
    """Images per class a file's set holds (as `materialize` gives them)."""
    from ..synset import load_synset

    _, y = load_synset(path).synset.materialize()
    counts = torch.bincount(y.long())
    return int(counts.min())


def data_for(source: SetSource, dataset: str, root: str | None, device: str = "cpu"):
    """``(set file or None, real data as the set sees it)``: a file's dataset options and whitening."""
    from ..data.zca import match_whitening, unwhitened_spec
    from ..synset import load_synset

    if not source.is_file:
        return None, load_dataset(dataset, root)
    f = load_synset(source.path, device=device)
    raw = unwhitened_spec(f.spec)
    data = load_dataset(raw.name, root, **raw.extra)
    return f, match_whitening(data, f.zca)


class MemorySet(SetFeatures):
    """Images of some classes with their class labels (and label vectors when the set had them): the
    set protocol the evaluator trains on (`evaluation.evaluate`), for any subset of classes."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, soft_labels: torch.Tensor | None = None,
                 label_loss: str = "soft_ce", label_temperature: float = 1.0) -> None:
        self.images, self.labels = images.detach(), labels.detach().long()
        self.soft_labels = None if soft_labels is None else soft_labels.detach()
        self.label_loss, self.label_temperature = label_loss, label_temperature

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def learned_lr(self) -> None:
        return None

    def label_vectors(self) -> torch.Tensor | None:
        return self.soft_labels

    def hard(self) -> "MemorySet":
        return MemorySet(self.images, self.labels)

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
    """The images of ``classes`` of a loaded set file (``per_class``: the first that many of each)."""
    synset = f.synset
    x, y = synset.materialize()
    soft = synset.label_vectors()
    keep = []
    for c in classes:
        idx = (y == c).nonzero().flatten()
        if per_class is not None:
            if len(idx) < per_class:
                raise AppError(f"the set has {len(idx)} images of class {c}, fewer than {per_class}")
            idx = idx[:per_class]
        keep.append(idx)
    idx = torch.cat(keep)
    return MemorySet(x[idx], y[idx], None if soft is None else soft[idx],
                     synset.label_loss, synset.label_temperature)


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


# -- jobs and records ----------------------------------------------------------------------------------
def job_name(*parts: Any) -> str:
    """A job's file name from its coordinates (file-safe)."""
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "-", "-".join(str(p) for p in parts))


VOLATILE = ("device", "root", "out")  # where a job runs, not what it computes


def settings_of(job: dict[str, Any]) -> dict[str, Any]:
    """What a job computes (its row keeps it as ``settings``): the job less where it runs, as JSON."""
    return json.loads(json.dumps({k: v for k, v in job.items() if k not in VOLATILE}))


def run_jobs(executor: Executor, out: Path, tasks: list[Task], desc: str) -> list[dict[str, Any]]:
    """Run the tasks not done yet (each writes ``out/jobs/NAME.json``), then every job's row, in order.
    A result file made with other settings (another protocol, another file under the same name) is
    an error, never a silent reuse."""
    stale = []
    for t in tasks:
        if t.done():
            kept = json.loads(Path(t.out).read_text()).get("settings")
            if kept is not None and kept != settings_of(t.args[0]):
                now = settings_of(t.args[0])
                diff = sorted(k for k in set(kept) | set(now) if kept.get(k) != now.get(k))
                stale.append(f"{Path(t.out).name} ({', '.join(diff)})")
    if stale:
        raise AppError(f"{out} holds results made with other settings: {'; '.join(stale[:3])}"
                       f"{' ...' if len(stale) > 3 else ''}; give another --out (or remove those files)")
    if any(not t.done() for t in tasks):
        check_output_dir(out / JOBS, "results folder")
    files = executor.run(tasks, desc=desc)
    return [json.loads(Path(files[t.key]).read_text()) for t in tasks]


def write_records(out: Path, rows: list[dict[str, Any]], name: str = RECORDS) -> Path:
    """All rows as JSON lines, written atomically."""
    path = out / name
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=False) + "\n" for r in rows))
    return path


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population standard deviation (as the papers' ``np.std``)."""
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    m = sum(values) / n
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / n)


def check_out(out: str | Path, what: str) -> Path:
    out = Path(out)
    check_output_dir(out, what)
    out.mkdir(parents=True, exist_ok=True)
    return out
