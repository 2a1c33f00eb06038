"""DSA as a training-time augmentation: fresh parameters for every batch (not siamese).

The evaluation protocols (`evaluation.augments`), the experts (`experts.train`) and the teachers
(`teachers`) train networks on batches augmented this way; it lives here, below all three, so that
none of them imports another for it.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..data.spec import DatasetSpec
from .dsa import DSAConfig, sample_params
from .dsa_ops import apply


def dsa_augment(spec: DatasetSpec, strategy: str, *, flip_all: bool = False,
                align_corners: bool = False) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    """DSA with fresh parameters per batch, as in the reference evaluation: one operation per batch
    and per-sample parameters, drawn from the generator the caller passes. Flips only where the spec
    allows them, unless ``flip_all`` (the papers' evaluators flip digits too)."""
    cfg = DSAConfig(strategy=strategy, op_choice="per_batch", align_corners=align_corners)
    allow_flip = spec.allow_flip or flip_all

    def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        params = sample_params(cfg, x.shape[0], g, tuple(x.shape[-2:]), allow_flip=allow_flip)
        return apply(x, params.to(x.device), cfg)

    return augment
