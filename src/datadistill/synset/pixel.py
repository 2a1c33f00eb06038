"""`PixelSet`: the synthetic set as learnable images (one tensor), labels and an optional learned lr.

Examples are stored class by class: class ``c`` holds rows ``c*ipc .. (c+1)*ipc - 1``, so
``images.view(C, ipc, ...)`` gives a per-class view without copying.

**Soft labels.** Beside its class labels a set may carry one label vector per image
(``soft_labels``, ``[N, C]``): a teacher's probabilities (RDED), labels learned with the images
(DATM), or real-valued targets (FRePo). The set says how they are meant to be trained on
(``label_loss``, one of `functional.labels.LABEL_LOSSES`, and ``label_temperature``), and then
``set(index)`` and ``batches()`` yield the vectors as targets. The class labels stay: they order
the set, and export, viewing and hard-label evaluation use them.
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import torch
from torch import nn

from ..data.spec import DatasetSpec, RealData
from ..functional.labels import LABEL_LOSSES
from .base import SYNSETS, SetFeatures, shuffled_batches


class PixelSet(nn.Module, SetFeatures):
    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        num_classes: int,
        lr: float | None = None,
        learn_lr: bool = False,
        soft_labels: torch.Tensor | None = None,
        label_loss: str = "soft_ce",
        label_temperature: float = 1.0,
    ) -> None:
        super().__init__()
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
        counts = torch.bincount(labels.long(), minlength=num_classes)
        if not bool((counts == counts[0]).all()) or int(counts[0]) == 0:
            raise ValueError(f"PixelSet needs the same positive number of images per class, got {counts.tolist()}")
        expected = torch.arange(num_classes, device=labels.device).repeat_interleave(int(counts[0]))
        if not torch.equal(labels.long(), expected):
            raise ValueError("PixelSet stores images class by class: labels must be sorted by class")
        self.num_classes = num_classes
        self.ipc = int(counts[0])
        self.images = nn.Parameter(images.detach().clone().float())
        self.register_buffer("labels", labels.detach().clone().long())
        if lr is not None and lr <= 0:
            raise ValueError(f"step size must be positive, got {lr}")
        # the step size is stored as its log so it stays positive under gradient steps
        self.log_lr = nn.Parameter(torch.tensor(math.log(lr)), requires_grad=learn_lr) if lr is not None else None
        LABEL_LOSSES.get(label_loss)  # an unknown name lists the valid ones
        if not label_temperature > 0:
            raise ValueError(f"label_temperature must be > 0, got {label_temperature}")
        self.label_loss = LABEL_LOSSES.canonical(label_loss)
        self.label_temperature = float(label_temperature)
        self.register_buffer("soft_labels", None)
        if soft_labels is not None:
            self.set_soft_labels(soft_labels)

    def set_soft_labels(self, soft_labels: torch.Tensor | None) -> None:
        """Replace the label vectors (``[N, C]``, finite), or remove them with None."""
        if soft_labels is None:
            self.soft_labels = None
            return
        want = (self.images.shape[0], self.num_classes)
        if tuple(soft_labels.shape) != want:
            raise ValueError(f"soft labels must have shape {want} (one vector per image), got "
                             f"{tuple(soft_labels.shape)}")
        if not bool(torch.isfinite(soft_labels).all()):
            raise ValueError("soft labels must be finite")
        self.soft_labels = soft_labels.detach().clone().float().to(self.images.device)
    # -------------------------------------------------------------------- construction
    @classmethod
    def from_real(cls, real: RealData, ipc: int, generator: torch.Generator, **kw: Any) -> "PixelSet":
        """``ipc`` distinct random training images per class."""
        short = [c for c in range(real.num_classes) if real.class_count(c) < ipc]
        if short:
            raise ValueError(f"classes {short} have fewer than {ipc} training images")
        images, labels = real.sample_classes(ipc, generator)
        return cls(images.cpu(), labels.cpu(), real.num_classes, **kw)

    @classmethod
    def from_noise(cls, spec: DatasetSpec, ipc: int, generator: torch.Generator, **kw: Any) -> "PixelSet":
        """Standard-normal images (in normalized space)."""
        n = spec.num_classes * ipc
        images = torch.randn(n, *spec.shape, generator=generator)
        labels = torch.arange(spec.num_classes).repeat_interleave(ipc)
        return cls(images, labels, spec.num_classes, **kw)

    # -------------------------------------------------------------------- protocol
    def forward(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and their targets: the label vectors when the set has them, else the classes."""
        targets = self.soft_labels if self.soft_labels is not None else self.labels
        return self.images[index], targets[index]

    def label_vectors(self) -> torch.Tensor | None:
        return self.soft_labels

    def hard(self) -> "PixelSet":
        """A copy with the same images and step size and class labels only (hard-label evaluation)."""
        return PixelSet(self.images.detach(), self.labels, self.num_classes, lr=self.learned_lr())

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def class_index(self, c: int) -> torch.Tensor:
        return torch.arange(c * self.ipc, (c + 1) * self.ipc, device=self.images.device)

    def per_class(self) -> torch.Tensor:
        """``[C, ipc, ...]`` view of the (differentiable) images."""
        return self.images.view(self.num_classes, self.ipc, *self.images.shape[1:])

    def batches(self, batch_size: int, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return shuffled_batches(self, batch_size, generator)

    def materialize(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images.detach().clone(), self.labels.detach().clone()

    def storage_numel(self) -> int:
        labels = int(self.soft_labels.numel()) if self.soft_labels is not None else 0  # label vectors are stored too
        return int(self.images.numel()) + labels + (1 if self.log_lr is not None and self.log_lr.requires_grad else 0)

    def learned_lr(self) -> float | None:
        return float(self.log_lr.detach().exp()) if self.log_lr is not None else None

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"images": self.images.detach(), "labels": self.labels}
        if self.log_lr is not None:
            out["log_lr"] = self.log_lr.detach().reshape(1)
        if self.soft_labels is not None:
            out["soft_labels"] = self.soft_labels.detach()
        return out

    def config(self) -> dict[str, Any]:
        out: dict[str, Any] = {"num_classes": self.num_classes, "ipc": self.ipc,
                               "learn_lr": bool(self.log_lr is not None and self.log_lr.requires_grad)}
        if self.soft_labels is not None:  # files without soft labels keep exactly their old metadata
            out.update(label_loss=self.label_loss, label_temperature=self.label_temperature)
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> "PixelSet":
        lr = float(tensors["log_lr"].exp()) if "log_lr" in tensors else None
        return cls(tensors["images"], tensors["labels"], int(config["num_classes"]), lr=lr,
                   learn_lr=bool(config.get("learn_lr", False)), soft_labels=tensors.get("soft_labels"),
                   label_loss=str(config.get("label_loss", "soft_ce")),
                   label_temperature=float(config.get("label_temperature", 1.0)))


SYNSETS.add("pixel", PixelSet)
