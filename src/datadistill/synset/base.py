"""The `SyntheticSet` protocol: what evaluation, export and viewing need from any distilled set."""

from __future__ import annotations

from typing import ClassVar, Iterator, Protocol, runtime_checkable

import torch

from ..registry import Registry


@runtime_checkable
class SyntheticSet(Protocol):
    """A distilled training set (an ``nn.Module``; its learnable tensors are its parameters).

    - ``forward(index) -> (x, y)``: differentiable images and labels of the given examples.
    - ``class_index(c)``: indices of the examples of class ``c``.
    - ``batches(batch_size, generator)``: one epoch of shuffled ``(x, y)`` batches with the method's
      own training semantics (e.g. HaBa draws a hallucinator per base); used by the evaluator.
    - ``materialize()``: every example as detached tensors, for export and viewing.
    - ``storage_numel()``: how many floats the set stores, so methods compare at equal budget.
    - ``learned_lr()``: the learned step size, or ``None``.
    """

    num_classes: int
    ipc: int

    def forward(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...
    def class_index(self, c: int) -> torch.Tensor: ...
    def batches(self, batch_size: int, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...
    def materialize(self) -> tuple[torch.Tensor, torch.Tensor]: ...
    def storage_numel(self) -> int: ...
    def learned_lr(self) -> float | None: ...
    def tensors(self) -> dict[str, torch.Tensor]: ...
    def config(self) -> dict: ...


class SetFeatures:
    """What a set declares beyond the core protocol, with a plain hard-labelled set's defaults. Every
    set that training and evaluation take derives from it (`PixelSet`, `FactorizedSet`, `StepSet`,
    the evaluator's `RealSet`, the studies' `MemorySet`), so that no caller probes a set by attribute name:

    - ``label_vectors()``: the set's label vectors ``[N, C]`` (soft or learned labels), or None when
      it has class labels only; ``label_loss`` and ``label_temperature`` say how to train on them;
    - ``hard()``: the same set with class labels only (the set itself when it has nothing else);
    - ``has_schedule``: whether the set is an ordered schedule of steps (``schedule()``: DD's
      `StepSet`), which the ``replay`` protocol trains along;
    - ``len(set)``: its number of training examples (a protocol's ``steps_by_size`` table, FRePo's,
      counts them); every set defines it.
    """

    has_schedule: ClassVar[bool] = False
    label_loss: str = "soft_ce"
    label_temperature: float = 1.0

    def label_vectors(self) -> torch.Tensor | None:
        return None

    def hard(self) -> "SetFeatures":
        return self


SYNSETS: Registry[type] = Registry("synthetic set type")


def shuffled_batches(synset, batch_size: int, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of shuffled ``synset(index)`` batches: the plain training semantics of a set whose
    examples are stored one by one (pixels)."""
    n = len(synset)
    perm = torch.randperm(n, generator=generator).to(synset.images.device)
    for i in range(0, n, batch_size):
        yield synset(perm[i : i + batch_size])
