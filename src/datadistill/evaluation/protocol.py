"""`EvalProtocol`: how a distilled set is judged, with the field's named presets.

The default (``dc``) is the standard of the DC/DSA/DM papers without augmentation: fresh
ConvNets trained with SGD (lr 0.01, momentum 0.9, weight decay 5e-4, lr x0.1 at half the epochs,
batch 256) for 300 epochs; ``dsa`` trains 1000 epochs with DSA augmentation, as DSA and DM report.
The reported number is the *final* test accuracy of each model (never the best over the run),
as mean +- std (population std, as the reference code) over ``n_models`` models.

The ``*-paper`` presets reproduce the authors' released evaluators (``evaluate_synset`` of the
DC/DSA/DM code and of MTT's), so that a comparison with a paper's figure is made on its protocol:
``epochs + 1`` passes over the set, the lr x0.1 after pass ``epochs // 2 + 1`` with a new SGD
optimizer there (the momentum restarts), DSA with one op per batch and per-sample parameters,
flips included for every dataset (the papers' strategy strings flip digits too), and for MTT the
learned step size and ``align_corners=True`` sampling. Our own presets (``dc``, ``dsa``, ``mtt``)
keep a plain step schedule and never flip a dataset whose labels a flip can change: a sound choice
for a library, and the reason their figures differ from the papers' protocol.

Three more ``*-paper`` presets score a set as FRePo's, RDED's and HaBa's authors score theirs:

- ``frepo-paper`` (FRePo's ``script/eval.py``): ConvNets of widths 128/256/512 without normalization
  (``convnet_frepo_eval``, flax's lecun-normal initialization), Adam lr 3e-4 without weight decay,
  500 linear warm-up steps from 0 then cosine decay to 0.01 x lr, as many optimizer steps as FRePo's
  table gives for the set's number of images (``steps_by_size``: 10 -> 1000, 100 -> 2000, ...; another
  size is an error asking for ``steps=N``), batches of min(N, 500), FRePo's augmentation (``frepo``),
  and its loss ``0.5 * sum_c (z_c - y_c)^2`` (``sse_half``) on the set's learned labels, or on FRePo's
  label encoding ``(e_c - 1/C) / sqrt(C/10)`` for a set of class indices;
- ``rded-paper`` (RDED's ``validation/main.py``): BatchNorm ConvNets (their ``conv3``), AdamW lr 1e-3,
  weight decay 0.01 on weight tensors only, 300 epochs with the lr ``0.5 * (1 + cos(pi e / 600))``
  per epoch (it ends at half the lr), batch 50, tile shuffle + RandomResizedCrop of the set's factor
  + flip + CutMix on every batch (``rded``), each batch relabelled by the teacher at temperature 20
  and trained with their KL (``kl_unscaled``: ``nn.KLDivLoss(reduction="batchmean")``, no ``T^2``);
- ``haba-paper`` (HaBa's ``evaluate_synset``): ``mtt-paper`` (DSA, 1000 + 1 passes, the learned lr)
  with each training and test batch standardized by its own mean and std, the test set in HaBa's
  batches of 128.
"""

from __future__ import annotations

import functools
import typing
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ..config import ConfigError, coerce_value
from ..registry import Registry
from .parts import LABEL_ENCODINGS, LABEL_MODES, Augmentation, Labels, Optimizer, Schedule, check_rules

if TYPE_CHECKING:
    from ..train.optim import Optim

# The protocol's fields as a user writes them (``--protocol dc epochs=100``, a config's ``eval:``, a
# record's ``protocol``): each flat name and where it lives, ``(part, field)`` (part None: the protocol's
# own field). `EvalProtocol.to_dict` writes them in this order, so records and fingerprints keep the
# layout they had before the protocol was split into parts.
FLAT: dict[str, tuple[str | None, str]] = {
    "name": (None, "name"), "model": (None, "model"), "epochs": ("schedule", "epochs"),
    "lr": ("optimizer", "lr"), "use_learned_lr": ("optimizer", "use_learned_lr"),
    "momentum": ("optimizer", "momentum"), "weight_decay": ("optimizer", "weight_decay"),
    "decay_at": ("schedule", "decay_at"), "batch_size": (None, "batch_size"), "augment": ("augment", "name"),
    "schedule": ("schedule", "mode"), "dsa_strategy": ("augment", "dsa_strategy"), "n_models": (None, "n_models"),
    "seed": (None, "seed"), "weight_init": (None, "weight_init"), "test_batch_size": (None, "test_batch_size"),
    "reference_schedule": ("schedule", "reference"), "dsa_flip_all": ("augment", "flip_all"),
    "dsa_align_corners": ("augment", "align_corners"), "dc_strategy": ("augment", "dc_strategy"),
    "epochs_augmented": ("augment", "epochs_augmented"), "labels": ("labels", "mode"),
    "label_loss": ("labels", "loss"), "label_temperature": ("labels", "temperature"),
    "teacher": ("labels", "teacher"), "optimizer": ("optimizer", "name"), "lr_schedule": ("schedule", "decay"),
    "warmup_steps": ("schedule", "warmup_steps"), "lr_final": ("schedule", "lr_final"),
    "cosine_fraction": ("schedule", "cosine_fraction"), "decay_only_weights": ("optimizer", "decay_only_weights"),
    "steps": ("schedule", "steps"), "steps_by_size": ("schedule", "steps_by_size"),
    "standardize": ("augment", "standardize"), "label_encoding": ("labels", "encoding"),
    "rded_factor": ("augment", "rded_factor"),
}
PARTS: dict[str, type] = {"optimizer": Optimizer, "schedule": Schedule, "augment": Augmentation, "labels": Labels}


@dataclass(frozen=True)
class EvalProtocol:
    """How a set is judged: ``n_models`` fresh ``model``s (initialized from ``weight_init``, model ``i``
    seeded ``seed * 1000 + i``) trained in batches of ``batch_size`` and tested in batches of
    ``test_batch_size``, with four parts: the `Optimizer`, the `Schedule`, the `Augmentation` and the
    `Labels`. Build one from a preset (`get_protocol`) or from its flat fields (`from_dict`); change
    it with `with_` (flat names) or ``dataclasses.replace`` (whole parts)."""

    name: str = "dc"
    model: str = "convnet"
    n_models: int = 5
    seed: int = 0
    weight_init: str = "default"  # initialization distribution of the fresh models (models.WEIGHT_INITS)
    batch_size: int = 256
    test_batch_size: int = 500
    optimizer: Optimizer = field(default_factory=Optimizer)
    schedule: Schedule = field(default_factory=Schedule)
    augment: Augmentation = field(default_factory=Augmentation)
    labels: Labels = field(default_factory=Labels)

    def __post_init__(self) -> None:
        _check_own(self)
        if self.schedule.mode == "replay":
            used = [f for f, on in (("optimizer", self.optimizer.name != "sgd"),
                                    ("lr_schedule", self.schedule.decay != "step"), ("steps", self.schedule.by_steps),
                                    ("standardize", self.augment.standardize)) if on]
            if used:
                raise ValueError(f"schedule=replay trains by plain GD along the set's own steps; it takes no "
                                 f"{', '.join(used)}")
        from ..models import MODELS, WEIGHT_INITS  # noqa: PLC0415  (models import nothing from here)

        MODELS.get(self.model)
        WEIGHT_INITS.get(self.weight_init)  # unknown names list the valid ones

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "eval") -> "EvalProtocol":
        """A protocol from its flat fields (`FLAT`; missing ones take the defaults), each type-checked
        and range-checked (`ConfigError` naming the field)."""
        unknown = sorted(set(d) - set(FLAT))
        if unknown:
            raise ConfigError(f"unknown evaluation field(s) {unknown}; valid: {', '.join(sorted(FLAT))}")
        own: dict[str, Any] = {}
        parts: dict[str, dict[str, Any]] = {p: {} for p in PARTS}
        for key, value in d.items():
            part, name = FLAT[key]
            owner = cls if part is None else PARTS[part]
            value = coerce_value(value, _hints(owner)[name], f"{where}.{key}")
            (own if part is None else parts[part])[name] = value
        try:
            return cls(**own, **{p: PARTS[p](**kw) for p, kw in parts.items()})
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{where}: {e}") from e

    def to_dict(self) -> dict[str, Any]:
        """The flat fields (`FLAT`), JSON-able: what records and fingerprints keep."""
        out: dict[str, Any] = {}
        for key, (part, name) in FLAT.items():
            value = getattr(self if part is None else getattr(self, part), name)
            out[key] = [list(e) for e in value] if key == "steps_by_size" else list(value) if key == "decay_at" \
                else value
        return out

    def with_(self, **changes: Any) -> "EvalProtocol":
        """This protocol with flat fields changed (``with_(epochs=100, labels="hard")``), checked as
        `from_dict` checks them."""
        if not changes:
            return self
        return EvalProtocol.from_dict({**self.to_dict(), **changes})

    def sized(self, set_size: int | None) -> "EvalProtocol":
        """The protocol for a set of ``set_size`` images: with ``steps=0`` and a ``steps_by_size`` table,
        the run's steps from the table (a size not in it is a `ConfigError` asking for ``steps=N``)."""
        s = self.schedule
        if s.steps or not s.steps_by_size:
            return self
        table = dict(s.steps_by_size)
        if set_size not in table:
            sizes = ", ".join(str(n) for n in sorted(table))
            what = f"a set of {set_size} images" if set_size is not None else "a set of unknown size"
            raise ConfigError(f"protocol {self.name!r} takes its number of steps from the set's size ({sizes} "
                              f"images); {what} needs steps=N")
        return replace(self, schedule=replace(s, steps=table[set_size]))

    def optim(self, lr: float) -> "Optim":
        """How each model trains (`train.optim.Optim`), at the lr ``lr`` (the protocol's or the set's)."""
        from ..train.optim import Optim  # noqa: PLC0415

        o, s = self.optimizer, self.schedule
        return Optim(lr=lr, epochs=s.train_epochs, steps=s.steps, optimizer=o.name, momentum=o.momentum,
                     weight_decay=o.weight_decay, decay_only_weights=o.decay_only_weights, lr_schedule=s.decay,
                     milestones=s.milestones, restart_at_milestones=s.reference, warmup_steps=s.warmup_steps,
                     lr_final=s.lr_final, cosine_fraction=s.cosine_fraction)

    def resolved(self, dataset: str, model: str) -> "EvalProtocol":
        """The protocol as it runs for ``dataset`` and ``model`` (canonical names): with
        ``augment="dc"``, the DC ops of ``dc_strategy="auto"`` and the epochs they imply."""
        a = self.augment
        if a.name != "dc":
            return self
        from ..augment.classic import dc_strategy  # noqa: PLC0415

        ops = dc_strategy(dataset, model) if a.dc_strategy == "auto" else a.dc_strategy
        augmented = ops not in ("none", "")
        epochs = a.epochs_augmented if augmented and a.epochs_augmented else self.schedule.epochs
        return replace(self, augment=replace(a, dc_strategy=ops), schedule=replace(self.schedule, epochs=epochs))


def _check_own(p: EvalProtocol) -> None:
    check_rules(tuple((name, value, value >= 1, ">= 1") for name, value in (
        ("n_models", p.n_models), ("batch_size", p.batch_size), ("test_batch_size", p.test_batch_size))))


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


PROTOCOLS: Registry[EvalProtocol] = Registry("evaluation protocol")
PROTOCOLS.add("dc", EvalProtocol(name="dc"))
DSA = Augmentation("dsa")
PROTOCOLS.add("dsa", EvalProtocol(name="dsa", schedule=Schedule(epochs=1000), augment=DSA))
LEARNED_LR = Optimizer(use_learned_lr=True)
PROTOCOLS.add("mtt", EvalProtocol(name="mtt", schedule=Schedule(epochs=1000), augment=DSA, optimizer=LEARNED_LR))
# Dataset Distillation: replay the distilled steps with their learned step sizes on fresh (or the
# method's own fixed / held-out pretrained) networks; LeNet as in the paper's MNIST experiments.
# Fresh networks are Xavier-initialized, the distribution DD's code trains its random-init data for.
PROTOCOLS.add("dd", EvalProtocol(name="dd", model="lenet", schedule=Schedule(mode="replay", epochs=1), n_models=20,
                                 weight_init="xavier"))
# The papers' own evaluators (see the module doc); DM's code evaluates as DSA's.
REFERENCE = Schedule(epochs=1000, reference=True)
PAPER_DSA = Augmentation("dsa", flip_all=True)
PROTOCOLS.add("dsa-paper", EvalProtocol(name="dsa-paper", schedule=REFERENCE, augment=PAPER_DSA), aliases=("dm-paper",))
MTT_DSA = replace(PAPER_DSA, align_corners=True)
PROTOCOLS.add("mtt-paper", EvalProtocol(name="mtt-paper", schedule=REFERENCE, augment=MTT_DSA, optimizer=LEARNED_LR))
# DC's code without DSA: the classic augmentation where its rule asks for it (MNIST, BatchNorm
# ConvNets) and then 1000 epochs, otherwise none and 300
PROTOCOLS.add("dc-paper", EvalProtocol(name="dc-paper", schedule=Schedule(epochs=300, reference=True),
                                       augment=Augmentation("dc", epochs_augmented=1000)))
# FRePo's script/eval.py: optimizer steps by the set's number of images (its ``step_per_prototpyes``)
FREPO_STEPS = ((10, 1000), (100, 2000), (200, 20000), (400, 5000), (500, 5000), (1000, 10000), (2000, 40000),
               (5000, 40000))
PROTOCOLS.add("frepo-paper", EvalProtocol(
    name="frepo-paper", model="convnet_frepo_eval", weight_init="lecun", batch_size=500,
    optimizer=Optimizer("adam", lr=3e-4, weight_decay=0.0),
    schedule=Schedule(decay="cosine", warmup_steps=500, lr_final=0.01, steps_by_size=FREPO_STEPS),
    augment=Augmentation("frepo"), labels=Labels(loss="sse_half", encoding="frepo")))
# RDED's validation/main.py with the defaults of its argument.py and its CIFAR scripts (conv3 -> conv3,
# --factor 1, IPC 10 of 10 classes: batch 50); the teacher file is the run's (teacher=PATH)
PROTOCOLS.add("rded-paper", EvalProtocol(
    name="rded-paper", model="convnet_bn", batch_size=50,
    optimizer=Optimizer("adamw", lr=1e-3, weight_decay=0.01, decay_only_weights=True),
    schedule=Schedule(decay="cosine_epoch", cosine_fraction=0.5, epochs=300), augment=Augmentation("rded"),
    labels=Labels("teacher", loss="kl_unscaled", temperature=20.0)))
# HaBa's evaluate_synset/epoch: MTT's evaluator with every batch standardized, its test loader's batches of 128
PROTOCOLS.add("haba-paper", EvalProtocol(name="haba-paper", schedule=REFERENCE, optimizer=LEARNED_LR,
                                         augment=replace(MTT_DSA, standardize=True), test_batch_size=128))
# Small and quick: for smoke tests and progress checks during a run, never for reported numbers.
PROTOCOLS.add("smoke", EvalProtocol(name="smoke", schedule=Schedule(epochs=30), n_models=2))


def get_protocol(name: str, **overrides: Any) -> EvalProtocol:
    """A preset by name, with flat field overrides (`FLAT`; unknown fields are an error naming the valid
    ones; values are type-checked and range-checked: `ConfigError`)."""
    protocol = PROTOCOLS.get(name).with_(**overrides)
    # a preset's own need is checked when it runs
    if overrides.get("labels") == "teacher" and not protocol.labels.teacher:
        raise ConfigError("labels=teacher needs a teacher file: teacher=PATH (make one with `datadistill teacher`)")
    return protocol


__all__ = ["FLAT", "LABEL_ENCODINGS", "LABEL_MODES", "PROTOCOLS", "Augmentation", "EvalProtocol", "Labels",
           "Optimizer", "Schedule", "get_protocol"]
