"""The four frozen parts an `EvalProtocol` composes: how each model steps (`Optimizer`), how long it
trains and how its lr moves (`Schedule`), what its batches go through (`Augmentation`) and what it is
trained to predict (`Labels`).

Each part checks its own fields when it is built, with one-line errors that name the fields as a user
writes them (the flat names of `protocol.FLAT`, ``lr=0.01 epochs=300``), so a preset is a few parts
put together and a bad override is caught where it is made.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

LABEL_MODES = ("auto", "hard", "soft", "teacher")
LABEL_ENCODINGS = ("onehot", "frepo")
SCHEDULE_MODES = ("standard", "replay")


def check_rules(rules: tuple[tuple[str, Any, bool, str], ...]) -> None:
    """One `ValueError` naming every ``(field, value, ok, rule)`` whose ``ok`` is false."""
    bad = [f"{name} must be {rule}, got {value!r}" for name, value, ok, rule in rules if not ok]
    if bad:
        raise ValueError("; ".join(bad))


def _one_of(name: str, value: str, valid: Any) -> None:
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")


@dataclass(frozen=True)
class Optimizer:
    """How each model steps (`train.optim`): ``sgd`` (momentum, weight decay), ``adam`` (weight decay
    as L2) or ``adamw`` (decoupled); ``decay_only_weights`` decays weight tensors of 2+ dims only
    (RDED: not biases or norms); ``use_learned_lr`` trains at the set's learned step size when it has
    one (MTT)."""

    name: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    decay_only_weights: bool = False
    use_learned_lr: bool = False

    def __post_init__(self) -> None:
        from ..train.optim import OPTIMIZERS  # noqa: PLC0415

        _one_of("optimizer", self.name, OPTIMIZERS)
        check_rules((("lr", self.lr, self.lr > 0, "> 0"),
                ("momentum", self.momentum, 0 <= self.momentum < 1, "in [0, 1)"),
                ("weight_decay", self.weight_decay, self.weight_decay >= 0, ">= 0")))


@dataclass(frozen=True)
class Schedule:
    """How long each model trains and how its lr moves.

    ``mode``: ``standard`` (the optimizer over shuffled batches of the set) or ``replay`` (the set's own
    steps and learned step sizes, Dataset Distillation's: plain GD, ``epochs`` times over them).
    The length: ``epochs`` passes, or ``steps`` optimizer steps (> 0), or with ``steps=0`` the steps that
    ``steps_by_size`` (pairs of set size and steps, FRePo's table) gives the set's number of images.
    ``decay``: ``step`` (lr x0.1 at the ``decay_at`` fractions of the run), ``cosine`` (set every
    optimizer step after ``warmup_steps`` linear steps from 0; a run counted in steps) or
    ``cosine_epoch`` (set once per epoch); a cosine ends at ``lr_final`` x lr and covers
    ``cosine_fraction`` of its half period (RDED's 0.5 stops at half the lr). ``reference``: the
    reference evaluators' schedule, ``epochs + 1`` passes with the decay after pass ``epochs // 2 + 1``
    (``decay_at`` unused) and a new optimizer there.
    """

    mode: str = "standard"
    epochs: int = 300
    steps: int = 0
    steps_by_size: tuple[tuple[int, int], ...] = ()
    decay: str = "step"
    decay_at: tuple[float, ...] = (0.5,)
    reference: bool = False
    warmup_steps: int = 0
    lr_final: float = 0.0
    cosine_fraction: float = 1.0

    def __post_init__(self) -> None:
        from ..train.optim import LR_SCHEDULES  # noqa: PLC0415

        object.__setattr__(self, "decay_at", tuple(float(v) for v in self.decay_at))
        object.__setattr__(self, "steps_by_size", tuple((int(n), int(k)) for n, k in self.steps_by_size))
        _one_of("schedule", self.mode, SCHEDULE_MODES)
        _one_of("lr_schedule", self.decay, LR_SCHEDULES)
        check_rules((("epochs", self.epochs, self.epochs >= 1, ">= 1"),
                ("steps", self.steps, self.steps >= 0, ">= 0 (0: count epochs)"),
                ("warmup_steps", self.warmup_steps, self.warmup_steps >= 0, ">= 0"),
                ("lr_final", self.lr_final, 0 <= self.lr_final <= 1, "in [0, 1] (a fraction of lr)"),
                ("cosine_fraction", self.cosine_fraction, 0 < self.cosine_fraction <= 1, "in (0, 1]"),
                ("steps_by_size", [list(e) for e in self.steps_by_size],
                 all(n >= 1 and k >= 1 for n, k in self.steps_by_size), "pairs [set size, steps] of positive integers"),
                ("decay_at", list(self.decay_at), all(0 <= f <= 1 for f in self.decay_at),
                 "fractions of the epochs in [0, 1]")))
        if self.warmup_steps and self.decay != "cosine":
            raise ValueError(f"warmup_steps is for lr_schedule=cosine, not {self.decay!r}")
        if self.decay == "cosine" and not self.by_steps:
            raise ValueError("lr_schedule=cosine moves every optimizer step: give the run's length as steps=N (or "
                             "steps_by_size), or use lr_schedule=cosine_epoch")
        if self.decay == "cosine_epoch" and self.by_steps:
            raise ValueError("lr_schedule=cosine_epoch moves once per epoch: count the run in epochs (steps=0, no "
                             "steps_by_size), or use lr_schedule=cosine")
        if self.reference and self.by_steps:
            raise ValueError("reference_schedule is the reference evaluators' epoch schedule: use it with epochs "
                             "(steps=0, no steps_by_size)")
        if self.reference and self.decay != "step":
            raise ValueError(f"reference_schedule decays in steps of x0.1: use lr_schedule=step, not {self.decay!r}")

    @property
    def by_steps(self) -> bool:
        """Whether the run is counted in optimizer steps (``steps`` or a ``steps_by_size`` table)."""
        return bool(self.steps or self.steps_by_size)

    @property
    def train_epochs(self) -> int:
        """Passes over the set: ``epochs``, or ``epochs + 1`` as the reference's ``range(Epoch + 1)``."""
        return self.epochs + 1 if self.reference else self.epochs

    @property
    def milestones(self) -> tuple[int, ...]:
        """0-based epochs from which the lr is x0.1 further. Reference: its check ``ep in [E//2 + 1]``
        runs after pass ``ep``, so pass ``E//2 + 2`` is the first at the lower lr. In a run counted in
        steps, 0-based optimizer steps (``decay_at`` fractions of ``steps``). None under a cosine."""
        if self.decay != "step":
            return ()
        if self.reference:
            return (self.epochs // 2 + 2,)
        return tuple(int(f * (self.steps or self.epochs)) for f in self.decay_at)


@dataclass(frozen=True)
class Augmentation:
    """What each training batch goes through: ``name`` from `evaluation.augments.EVAL_AUGMENTS`
    (``none``, ``dsa``, ``dc``, ``frepo``, ``rded``) and its options.

    ``dsa``: the ops of ``dsa_strategy``; ``flip_all`` flips any dataset's images (the papers'
    strategies flip digits too); ``align_corners`` samples scale and rotate as MTT's code does.
    ``dc``: the ops of ``dc_strategy`` (``auto``: the DC code's rule per dataset and model,
    `augment.dc_strategy`) and, when they are not ``none``, ``epochs_augmented`` epochs (the DC code:
    1000 augmented, 300 otherwise; 0: the schedule's). ``rded``: tiles per side of the set's images
    (``rded_factor``, RDED's ``--factor``). ``standardize``: every training and test batch becomes
    ``(x - mean) / std`` over the batch (HaBa), before the rest.
    """

    name: str = "none"
    dsa_strategy: str = "color_crop_cutout_flip_scale_rotate"
    flip_all: bool = False
    align_corners: bool = False
    dc_strategy: str = "auto"
    epochs_augmented: int = 0
    rded_factor: int = 1
    standardize: bool = False

    def __post_init__(self) -> None:
        from .augments import EVAL_AUGMENTS  # noqa: PLC0415

        _one_of("augment", self.name, EVAL_AUGMENTS.names())
        check_rules((("epochs_augmented", self.epochs_augmented, self.epochs_augmented >= 0, ">= 0 (0: epochs)"),
                ("rded_factor", self.rded_factor, self.rded_factor >= 1, ">= 1")))
        if self.name == "dc" and self.dc_strategy != "auto":
            from ..augment.classic import ClassicAugment  # noqa: PLC0415

            ClassicAugment(self.dc_strategy)  # unknown ops list the valid ones
        if self.name == "dsa":
            from ..augment import parse_strategy  # noqa: PLC0415

            parse_strategy(self.dsa_strategy)  # unknown ops list the valid ones


@dataclass(frozen=True)
class Labels:
    """What the models are trained to predict (`evaluation.labels`). ``mode``: ``auto`` (the set's label
    vectors when it has them, else its classes), ``hard`` (classes), ``soft`` (the set's vectors) or
    ``teacher`` (every augmented batch relabelled by the network in the file ``teacher``). ``loss``:
    ``auto`` (hard: ce; soft: the set's; teacher: kl) or a `functional.labels` loss; ``temperature``:
    None for the set's own (soft labels), else 1; ``encoding`` of class indices under a vector loss:
    ``onehot``, or ``frepo``: ``(e_c - 1/C) / sqrt(C/10)``."""

    mode: str = "auto"
    loss: str = "auto"
    temperature: float | None = None
    teacher: str | None = None
    encoding: str = "onehot"

    def __post_init__(self) -> None:
        _one_of("labels", self.mode, LABEL_MODES)
        _one_of("label_encoding", self.encoding, LABEL_ENCODINGS)
        if self.loss != "auto":
            from ..functional.labels import LABEL_LOSSES  # noqa: PLC0415

            LABEL_LOSSES.get(self.loss)  # unknown names list the valid ones
        if self.temperature is not None and not self.temperature > 0:
            raise ValueError(f"label_temperature must be > 0 or null, got {self.temperature!r}")
