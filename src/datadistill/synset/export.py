"""Ways out of a distilled set: a `torch.utils.data.Dataset` view and an ImageFolder tree."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..data.spec import DatasetSpec
from ..paths import check_output_dir


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


def export_imagefolder(synset, spec: DatasetSpec, out: str | os.PathLike[str]) -> Path:
    """Write ``out/<class name>/<index>.png`` (de-normalized, clipped to [0, 1]).

    The tree loads back with ``torchvision.datasets.ImageFolder``. Class folders get a numeric
    prefix so that their sorted order is the label order.
    """
    from torchvision.utils import save_image

    out = Path(out)
    check_output_dir(out, "export folder")
    images, labels = synset.materialize()
    images = spec.denormalize(images.float().cpu()).clamp(0, 1)
    width = len(str(spec.num_classes - 1))
    for i, (x, y) in enumerate(zip(images, labels.tolist())):
        name = spec.class_names[y].replace("/", "-")
        folder = out / f"{y:0{width}d}_{name}"
        folder.mkdir(parents=True, exist_ok=True)
        save_image(x, folder / f"{i:05d}.png")
    return out
