"""`StepSet`: the synthetic set of Dataset Distillation (Wang et al. 2018), grouped by GD step.

``steps`` groups of ``num_classes * per_step`` images (step-major, class-major inside a step), and
one learned step size per (epoch, step): ``lr[e * steps + s]`` is used by step ``s`` in pass ``e``.
Step sizes are stored raw and mapped through softplus, so they stay positive (as the reference
code does, initialized so that ``softplus(raw) = lr_init``).
"""

from __future__ import annotations

from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..data.spec import DatasetSpec, RealData
from ..functional.unroll import schedule
from .base import SYNSETS, SetFeatures, shuffled_batches


def inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    """``x`` with ``softplus(x) = y`` (``y > 0``): how step sizes are stored."""
    return y + torch.log(-torch.expm1(-y))


class StepSet(nn.Module, SetFeatures):
    has_schedule = True  # the replay protocol trains along `schedule()`

    def __init__(self, images: torch.Tensor, num_classes: int, steps: int, epochs: int,
                 lrs: torch.Tensor | float = 0.02, learn_lr: bool = True) -> None:
        super().__init__()
        if steps < 1 or epochs < 1:
            raise ValueError(f"steps and epochs must be >= 1, got steps={steps}, epochs={epochs}")
        n = images.shape[0]
        if n % (steps * num_classes):
            raise ValueError(f"{n} images do not split into {steps} steps x {num_classes} classes")
        self.num_classes, self.steps, self.epochs = num_classes, steps, epochs
        self.per_step = n // (steps * num_classes)
        self.ipc = self.per_step * steps
        self.images = nn.Parameter(images.detach().clone().float())
        labels = torch.arange(num_classes).repeat_interleave(self.per_step).repeat(steps)
        self.register_buffer("labels", labels)
        lrs = torch.as_tensor(lrs, dtype=torch.float32)
        if lrs.numel() == 1:
            lrs = lrs.reshape(1).repeat(steps * epochs)
        if lrs.numel() != steps * epochs or bool((lrs <= 0).any()):
            raise ValueError(f"need {steps * epochs} positive step sizes, got {lrs.tolist()}")
        self.raw_lrs = nn.Parameter(inverse_softplus(lrs.detach()), requires_grad=learn_lr)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_noise(cls, spec: DatasetSpec, per_step: int, steps: int, epochs: int, generator: torch.Generator,
                   **kw: Any) -> "StepSet":
        images = torch.randn(steps * spec.num_classes * per_step, *spec.shape, generator=generator)
        return cls(images, spec.num_classes, steps, epochs, **kw)

    @classmethod
    def from_real(cls, real: RealData, per_step: int, steps: int, epochs: int, generator: torch.Generator,
                  **kw: Any) -> "StepSet":
        """Distinct random real images, ``per_step`` per class in each step."""
        x, _ = real.sample_classes(per_step * steps, generator)  # [C, steps*per_step] class-major
        c = real.num_classes
        x = x.view(c, steps, per_step, *x.shape[1:]).transpose(0, 1).reshape(-1, *x.shape[1:])
        return cls(x.cpu(), c, steps, epochs, **kw)

    # ------------------------------------------------------------------ DD's view
    def lrs(self) -> torch.Tensor:
        """The ``epochs * steps`` step sizes (differentiable)."""
        return F.softplus(self.raw_lrs)

    def step_images(self, s: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.num_classes * self.per_step
        return self.images[s * n : (s + 1) * n], self.labels[s * n : (s + 1) * n]

    def schedule(self) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """The training schedule ``[(x, y, lr)]``: ``epochs`` passes over the steps."""
        images, labels = zip(*(self.step_images(s) for s in range(self.steps)))
        return schedule(images, labels, self.lrs(), self.epochs)

    # ------------------------------------------------------------------ SyntheticSet protocol
    def forward(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def class_index(self, c: int) -> torch.Tensor:
        return (self.labels == c).nonzero().flatten()

    def batches(self, batch_size: int, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Shuffled batches of all images (for the standard protocol; DD's own is `schedule`)."""
        return shuffled_batches(self, batch_size, generator)

    def materialize(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images.detach().clone(), self.labels.detach().clone()

    def storage_numel(self) -> int:
        return int(self.images.numel() + self.raw_lrs.numel())

    def learned_lr(self) -> float | None:
        return None  # one step size per step, not one for the whole set: see `lrs()`

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"images": self.images.detach(), "raw_lrs": self.raw_lrs.detach()}

    def config(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "steps": self.steps, "epochs": self.epochs,
                "per_step": self.per_step, "learn_lr": bool(self.raw_lrs.requires_grad),
                "lrs": [round(float(v), 6) for v in self.lrs().detach()]}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> "StepSet":
        s = cls(tensors["images"], int(config["num_classes"]), int(config["steps"]), int(config["epochs"]),
                learn_lr=bool(config.get("learn_lr", True)))
        with torch.no_grad():
            s.raw_lrs.copy_(tensors["raw_lrs"])
        return s


SYNSETS.add("steps", StepSet)
