"""The optimizer and learning-rate schedule of one training run, shared by `train_classifier` and the
batched evaluation (`evaluation.batched`), so that both step the same way.

`Optim` describes a run: its optimizer (``sgd``, ``adam``, ``adamw``), its length (``epochs``, or
``steps`` optimizer steps when > 0) and how the lr moves:

- ``step``: x0.1 at each milestone (epochs; optimizer steps in a run counted in steps), optionally
  with a new optimizer at each (``restart_at_milestones``: the DC/DSA/MTT evaluators);
- ``cosine``: set before every optimizer step ``t`` (0-based, of ``steps``): a linear warm-up
  ``lr * t / warmup_steps``, then ``lr * (final + (1 - final) * (1 + cos(pi * fraction * u)) / 2)``
  with ``u = (t - warmup_steps) / max(steps - warmup_steps, 1)`` (optax's ``join_schedules`` of a
  ``linear_schedule`` from 0 and a ``cosine_decay_schedule`` with ``alpha = final``: FRePo);
- ``cosine_epoch``: the same cosine without warm-up, set once per epoch ``e`` with ``u = e / epochs``
  (a ``LambdaLR`` stepped per epoch; RDED's is ``fraction = 0.5``: it ends at half the lr).

``decay_only_weights`` puts weight decay on weight tensors of two or more dimensions only (RDED's
``get_parameters``: never on biases or norm scales). Adam and AdamW use ``betas = (0.9, 0.999)``,
``eps = 1e-8`` (torch's and optax's defaults); ``momentum`` is SGD's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import Tensor

OPTIMIZERS = ("sgd", "adam", "adamw")
LR_SCHEDULES = ("step", "cosine", "cosine_epoch")


def lr_at(epoch: int, base_lr: float, milestones: tuple[int, ...], gamma: float = 0.1) -> float:
    """Step schedule: ``base_lr * gamma ** (number of milestones <= epoch)``."""
    return base_lr * gamma ** sum(1 for m in milestones if epoch >= m)


@dataclass(frozen=True)
class Optim:
    lr: float
    epochs: int = 1
    steps: int = 0  # > 0: the run is this many optimizer steps (epochs then only count passes)
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    decay_only_weights: bool = False
    lr_schedule: str = "step"
    milestones: tuple[int, ...] = ()
    restart_at_milestones: bool = False
    warmup_steps: int = 0
    lr_final: float = 0.0
    cosine_fraction: float = 1.0

    def lr_at(self, step: int, epoch: int) -> float:
        """The lr of optimizer step ``step`` (0-based), taken in epoch ``epoch`` (0-based)."""
        if self.lr_schedule == "step":
            return lr_at(step if self.steps else epoch, self.lr, self.milestones)
        if self.lr_schedule == "cosine":
            if step < self.warmup_steps:
                return self.lr * step / self.warmup_steps
            u = min((step - self.warmup_steps) / max(self.steps - self.warmup_steps, 1), 1.0)
        else:  # cosine_epoch
            u = epoch / self.epochs
        decay = 0.5 * (1.0 + math.cos(math.pi * self.cosine_fraction * u))
        return self.lr * (self.lr_final + (1.0 - self.lr_final) * decay)

    def build(self, params: Sequence[Tensor] | Sequence[tuple[str, Tensor]], stacked: bool = False
              ) -> torch.optim.Optimizer:
        """A fresh optimizer over ``params`` (tensors, or ``(name, tensor)`` pairs, which
        ``decay_only_weights`` needs). ``stacked``: the tensors carry a leading model dimension."""
        groups: list = list(params)
        if self.decay_only_weights:
            named = [p if isinstance(p, tuple) else ("", p) for p in groups]
            dim = 2 + int(stacked)
            decay = [t for n, t in named if "weight" in n and t.ndim >= dim]
            rest = [t for n, t in named if not ("weight" in n and t.ndim >= dim)]
            groups = [{"params": decay}, {"params": rest, "weight_decay": 0.0}]
        else:
            groups = [p[1] if isinstance(p, tuple) else p for p in groups]
        if self.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        cls = torch.optim.Adam if self.optimizer == "adam" else torch.optim.AdamW
        return cls(groups, lr=self.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=self.weight_decay)


class Stepper:
    """Runs an `Optim` over ``params``: ``for epoch, opt in run.epochs()`` gives each epoch's optimizer
    (a new one at a milestone when ``restart_at_milestones``); after each backward, ``run.step()``
    sets the step's lr and steps; ``run.done`` once ``steps`` steps are taken."""

    def __init__(self, optim: Optim, params: Sequence[Tensor] | Sequence[tuple[str, Tensor]],
                 stacked: bool = False) -> None:
        self.optim, self.params, self.stacked = optim, list(params), stacked
        self.opt = optim.build(self.params, stacked)
        self.t = 0
        self.epoch = 0

    @property
    def done(self) -> bool:
        return bool(self.optim.steps) and self.t >= self.optim.steps

    @property
    def total_epochs(self) -> int | None:
        return None if self.optim.steps else self.optim.epochs

    def epochs(self, start: int = 0) -> Iterator[tuple[int, torch.optim.Optimizer]]:
        """Epochs ``start``, ``start + 1``, ... (a resumed run starts past its finished epochs, with its
        optimizer's state and ``t`` restored: `state_dict`)."""
        o = self.optim
        epoch = start
        while not self.done and (o.steps or epoch < o.epochs):
            if o.restart_at_milestones and epoch in o.milestones:
                self.opt = o.build(self.params, self.stacked)
            self.epoch, before = epoch, self.t
            yield epoch, self.opt
            if o.steps and self.t == before:
                raise ValueError("the set gave no batch in an epoch: a run counted in steps cannot advance")
            epoch += 1

    def state_dict(self) -> dict:
        """The optimizer's state and the step count: what a resumed run needs besides the model."""
        return {"t": self.t, "optimizer": self.opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.t = int(state["t"])
        self.opt.load_state_dict(state["optimizer"])

    def step(self) -> None:
        lr = self.optim.lr_at(self.t, self.epoch)
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.opt.step()
        self.t += 1
