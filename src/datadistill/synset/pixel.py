"""`PixelSet`: the synthetic set as learnable images (one tensor), labels and an optional learned lr.

Examples are stored class by class: class ``c`` holds rows ``c*ipc .. (c+1)*ipc - 1``, so
``images.view(C, ipc, ...)`` gives a per-class view without copying.
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import torch
from torch import nn

from ..data.spec import DatasetSpec, RealData
from .base import SYNSETS, shuffled_batches


class PixelSet(nn.Module):
    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        num_classes: int,
        lr: float | None = None,
        learn_lr: bool = False,
        soft_labels: torch.Tensor | None = None,  # STUB of issue 19's soft labels (main's code replaces it)
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
        if soft_labels is not None and soft_labels.shape != (images.shape[0], num_classes):
            raise ValueError(f"soft labels must be [{images.shape[0]}, {num_classes}], got {tuple(soft_labels.shape)}")
        self.register_buffer("soft_labels", None if soft_labels is None else soft_labels.detach().clone().float())
        self.label_loss, self.label_temperature = label_loss, float(label_temperature)

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
        if self.soft_labels is not None:
            return self.images[index], self.soft_labels[index]
        return self.images[index], self.labels[index]

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
        return int(self.images.numel()) + (1 if self.log_lr is not None and self.log_lr.requires_grad else 0)

    def learned_lr(self) -> float | None:
        return float(self.log_lr.detach().exp()) if self.log_lr is not None else None

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"images": self.images.detach(), "labels": self.labels}
        if self.log_lr is not None:
            out["log_lr"] = self.log_lr.detach().reshape(1)
        if self.soft_labels is not None:
            out["soft_labels"] = self.soft_labels
        return out

    def config(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "ipc": self.ipc,
                "learn_lr": bool(self.log_lr is not None and self.log_lr.requires_grad),
                "label_loss": self.label_loss, "label_temperature": self.label_temperature}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> "PixelSet":
        lr = float(tensors["log_lr"].exp()) if "log_lr" in tensors else None
        return cls(tensors["images"], tensors["labels"], int(config["num_classes"]), lr=lr,
                   learn_lr=bool(config.get("learn_lr", False)), soft_labels=tensors.get("soft_labels"),
                   label_loss=config.get("label_loss", "soft_ce"),
                   label_temperature=float(config.get("label_temperature", 1.0)))


SYNSETS.add("pixel", PixelSet)
