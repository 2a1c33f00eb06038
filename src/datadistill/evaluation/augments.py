"""The training-time augmentations an evaluation protocol names (its ``augment`` field), by name.

Each entry builds ``augment(x, generator) -> x`` for a dataset spec and a protocol, or None (no
augmentation); the evaluator applies it to every training batch with fresh parameters drawn from the
model's own generator, in the sequential and the batched path alike.

- ``none``; ``dsa``: DSA, one op per batch, parameters per sample (`augment.training.dsa_augment`); ``dc``: the DC
  paper's classic ops (`augment.classic`);
- ``frepo``: FRePo's evaluation augmentation (`augment.frepo`), with flips where FRePo's code flips
  (not MNIST or Fashion-MNIST) and the dataset allows them;
- ``rded``: RDED's student training (`augment.rded`): tile shuffle and ``RandomResizedCrop`` of the
  protocol's ``rded_factor``, a flip on every dataset (the reference flips unconditionally), CutMix
  on every batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch

from ..augment.training import dsa_augment
from ..data.spec import DatasetSpec
from ..registry import Registry
from ..train.loop import Augment

if TYPE_CHECKING:
    from .protocol import EvalProtocol

AugmentBuilder = Callable[[DatasetSpec, "EvalProtocol"], "Augment | None"]
EVAL_AUGMENTS: Registry[AugmentBuilder] = Registry("evaluation augmentation")


@EVAL_AUGMENTS.register("none")
def _none(spec: DatasetSpec, p: "EvalProtocol") -> None:
    return None


@EVAL_AUGMENTS.register("dsa")
def _dsa(spec: DatasetSpec, p: "EvalProtocol") -> Augment:
    return dsa_augment(spec, p.augment.dsa_strategy, flip_all=p.augment.flip_all, align_corners=p.augment.align_corners)


@EVAL_AUGMENTS.register("dc")
def _dc(spec: DatasetSpec, p: "EvalProtocol") -> Augment:
    from ..augment.classic import ClassicAugment

    return ClassicAugment(p.augment.dc_strategy)  # ``resolved`` has turned "auto" into the ops


@EVAL_AUGMENTS.register("frepo")
def _frepo(spec: DatasetSpec, p: "EvalProtocol") -> Augment:
    from ..augment.frepo import NO_FLIP_DATASETS, FRePoAugment

    return FRePoAugment(flip=spec.allow_flip and spec.name not in NO_FLIP_DATASETS)


@EVAL_AUGMENTS.register("rded")
def _rded(spec: DatasetSpec, p: "EvalProtocol") -> Augment:
    from ..augment.rded import RDEDAugment

    return RDEDAugment(factor=p.augment.rded_factor, flip=True)


def build_augment(spec: DatasetSpec, protocol: "EvalProtocol") -> Augment | None:
    """The protocol's augmentation for data of ``spec``, standardizing each batch first when the
    protocol asks (HaBa's evaluation: ``(x - x.mean()) / x.std()`` over the whole batch)."""
    augment = EVAL_AUGMENTS.get(protocol.augment.name)(spec, protocol)
    if not protocol.augment.standardize:
        return augment

    def standardized(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        x = standardize(x)
        return augment(x, g) if augment is not None else x

    return standardized


def standardize(x: torch.Tensor) -> torch.Tensor:
    """``(x - x.mean()) / x.std()`` over the whole batch (unbiased std, as ``torch.Tensor.std``)."""
    return (x - x.mean()) / x.std()
