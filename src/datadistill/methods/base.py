"""The method protocol, its registry and the context a method runs in.

A method is a frozen ``Config`` dataclass with the paper's defaults plus a class built as
``Method(cfg, ctx)`` with ``step(iteration) -> metrics``, ``state_dict()`` and
``load_state_dict()``. Shared math lives in `datadistill.functional`, not in a base class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import torch

from ..data.spec import LoadedDataset
from ..registry import Registry


class DivergenceError(FloatingPointError):
    """A method's loss or a learned quantity became non-finite or left its valid range. Raised
    *before* the offending update is applied, so the set and the method are still in their last
    good state (the engine checkpoints that state before passing the error on)."""


@dataclass
class Context:
    """What a method gets: the data, the set it optimizes, the device and its own RNG stream."""

    data: LoadedDataset
    synset: Any
    device: torch.device
    generator: torch.Generator
    seed: int
    ipc: int
    iterations: int = 0
    data_root: str | None = None  # where further datasets are loaded from (e.g. a pretraining source)
    dataset_options: dict[str, Any] = field(default_factory=dict)  # what the dataset was loaded with

    @property
    def spec(self):
        return self.data.spec


class Method(Protocol):
    def step(self, iteration: int) -> dict[str, float]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class MethodEntry:
    """A registered method: its config class, its constructor and run defaults.

    ``iterations`` is the default number of ``step`` calls (0 for selection methods whose result
    is the initialization); ``init`` is the default initialization of the set's images
    (``real``/``noise``). A method may also offer ``eval_init() -> (callable(i) -> nn.Module) | None``
    (the networks its evaluation starts from, e.g. DD's fixed initialization),
    ``file_meta() -> dict`` (extra metadata for the distilled file) and
    ``extra_report(synset, data, device) -> dict | None`` (further final numbers, e.g. DD's
    before/after accuracies of pretrained networks).
    """

    name: str
    config: type
    build: Callable[[Any, Context], Method]
    iterations: int
    init: str = "real"
    description: str = ""
    eval_preset: str = "dc"  # the evaluation protocol the method's results are reported with
    inits: tuple[str, ...] = ("real", "noise")  # the image initializations ``synset`` accepts
    # ``synset(cfg, data, ipc, init, generator)`` builds the set the method optimizes; None: PixelSet
    synset: Callable[..., Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


METHODS: Registry[MethodEntry] = Registry("method")


def register_method(entry: MethodEntry, *aliases: str) -> MethodEntry:
    METHODS.add(entry.name, entry, aliases=aliases)
    return entry
