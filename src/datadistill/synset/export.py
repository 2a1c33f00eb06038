"""Ways out of a distilled set: a `torch.utils.data.Dataset` view and an ImageFolder tree."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..data.spec import DatasetSpec
from ..paths import OutputPathError, check_output_dir


class SynsetDataset(Dataset):
    """The materialized set as an ordinary dataset: ``(image, label)`` pairs, normalized like the
    real data, so users can train with their own loop (``DataLoader(SynsetDataset(f.synset))``).
    """

    def __init__(self, synset) -> None:
        self.images, self.labels = synset.materialize()

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])


def export_imagefolder(synset, spec: DatasetSpec, out: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Write ``out/<class name>/<index>.png`` (de-normalized, clipped to [0, 1]).

    The tree loads back with ``torchvision.datasets.ImageFolder``. Class folders get a numeric
    prefix so that their sorted order is the label order.

    A folder ``out`` that holds anything is refused (`OutputPathError`) unless ``overwrite``, which
    replaces it whole: the old images never mix with the new ones. The tree is built in a temporary
    sibling and renamed into place, so a failure leaves ``out`` as it was and no partial tree that
    ``ImageFolder`` would load.
    """
    from torchvision.utils import save_image

    out = Path(out)
    check_output_dir(out, "export folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputPathError(f"export folder {out} is not empty; choose a new folder, or pass --overwrite to "
                              "replace what it holds")
    images, labels = synset.materialize()
    images = spec.denormalize(images.float().cpu()).clamp(0, 1)
    width = len(str(spec.num_classes - 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        for i, (x, y) in enumerate(zip(images, labels.tolist())):
            name = spec.class_names[y].replace("/", "-")
            folder = tmp / f"{y:0{width}d}_{name}"
            folder.mkdir(exist_ok=True)
            save_image(x, folder / f"{i:05d}.png")
        tmp.chmod(0o755)  # mkdtemp's 0700 would hide the tree from other users
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)  # the new tree replaces the old one by two renames; the old goes last
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
