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

from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from ..config import ConfigError, from_dict
from ..registry import Registry

if TYPE_CHECKING:
    from ..train.optim import Optim


LABEL_MODES = ("auto", "hard", "soft", "teacher")
LABEL_ENCODINGS = ("onehot", "frepo")


@dataclass(frozen=True)
class EvalProtocol:
    name: str = "dc"
    model: str = "convnet"
    epochs: int = 300
    lr: float = 0.01
    use_learned_lr: bool = False  # train with the set's learned step size when it has one (MTT)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    decay_at: tuple[float, ...] = (0.5,)  # fractions of ``epochs`` at which lr is multiplied by 0.1
    batch_size: int = 256
    augment: str = "none"  # "none", "dsa" or "dc" (the DC paper's classic augmentation, `augment.classic`)
    # "standard": SGD over shuffled batches of the set; "replay": the set's own schedule of steps and
    # learned step sizes (Dataset Distillation), plain GD, no momentum or weight decay
    schedule: str = "standard"
    dsa_strategy: str = "color_crop_cutout_flip_scale_rotate"
    n_models: int = 5
    seed: int = 0
    weight_init: str = "default"  # initialization distribution of the fresh models (models.WEIGHT_INITS)
    test_batch_size: int = 500
    # the reference evaluators' schedule: ``epochs + 1`` passes, decay after pass ``epochs // 2 + 1``
    # (``decay_at`` is then unused) and a new optimizer at the decay
    reference_schedule: bool = False
    dsa_flip_all: bool = False  # DSA may flip any dataset's images (the papers' strategies), digits too
    dsa_align_corners: bool = False  # grid sampling of DSA's scale and rotate (MTT's code: True)
    # augment="dc": the ops ("auto": the DC code's rule per dataset and model, `augment.dc_strategy`),
    # and the epochs when they are not "none" (the DC code: 1000 augmented, 300 otherwise; 0: ``epochs``)
    dc_strategy: str = "auto"
    epochs_augmented: int = 0
    # what the models are trained to predict (see `evaluation.labels`): "auto" (the set's label
    # vectors when it has them, else its classes), "hard" (classes), "soft" (the set's vectors) or
    # "teacher" (every augmented batch relabelled by the network in the file ``teacher``)
    labels: str = "auto"
    label_loss: str = "auto"  # "auto" (hard: ce; soft: the set's; teacher: kl) or a `functional.labels` loss
    label_temperature: float | None = None  # None: the set's own (soft labels), else 1
    teacher: str | None = None  # a teacher file (`datadistill teacher`), for labels="teacher"
    # the optimizer and its lr schedule (`train.optim`): "sgd" (momentum, weight decay), "adam" (weight
    # decay as L2) or "adamw" (decoupled); "step" (decay_at, or reference_schedule), "cosine" (set every
    # optimizer step, after ``warmup_steps`` linear steps from 0; needs a run counted in steps) or
    # "cosine_epoch" (set once per epoch); the cosine ends at ``lr_final`` x lr, and covers
    # ``cosine_fraction`` of its half period (RDED's 0.5 stops at half the lr)
    optimizer: str = "sgd"
    lr_schedule: str = "step"
    warmup_steps: int = 0
    lr_final: float = 0.0
    cosine_fraction: float = 1.0
    decay_only_weights: bool = False  # weight decay on weight tensors of 2+ dims only (RDED: not biases, norms)
    # the run's length in optimizer steps instead of ``epochs`` passes (0: epochs); with steps=0,
    # ``steps_by_size`` (pairs of set size and steps, FRePo's table) picks it from the set's number of images
    steps: int = 0
    steps_by_size: tuple[tuple[int, int], ...] = ()
    standardize: bool = False  # each training and test batch becomes (x - mean) / std over the batch (HaBa)
    # class indices under a vector loss (mse, sse_half, ...): "onehot", or "frepo": (e_c - 1/C) / sqrt(C/10)
    label_encoding: str = "onehot"
    rded_factor: int = 1  # augment="rded": tiles per side of the set's images (RDED's --factor)

    def __post_init__(self) -> None:
        from .augments import EVAL_AUGMENTS  # noqa: PLC0415

        if self.augment not in EVAL_AUGMENTS.names():
            raise ValueError(f"unknown augment {self.augment!r}; valid: {', '.join(EVAL_AUGMENTS.names())}")
        if self.augment == "dc" and self.dc_strategy != "auto":
            from ..augment.classic import ClassicAugment  # noqa: PLC0415

            ClassicAugment(self.dc_strategy)  # unknown ops list the valid ones
        if self.labels not in LABEL_MODES:
            raise ValueError(f"unknown labels {self.labels!r}; valid: {', '.join(LABEL_MODES)}")
        if self.label_loss != "auto":
            from ..functional.labels import LABEL_LOSSES  # noqa: PLC0415

            LABEL_LOSSES.get(self.label_loss)  # unknown names list the valid ones
        if self.label_temperature is not None and not self.label_temperature > 0:
            raise ValueError(f"label_temperature must be > 0 or null, got {self.label_temperature!r}")
        if self.schedule not in ("standard", "replay"):
            raise ValueError(f"unknown schedule {self.schedule!r}; valid: standard, replay")
        object.__setattr__(self, "decay_at", tuple(float(v) for v in self.decay_at))
        object.__setattr__(self, "steps_by_size", tuple((int(n), int(k)) for n, k in self.steps_by_size))
        self._check_training()
        bad = [f"{name} must be {rule}, got {value!r}" for name, value, ok, rule in (
            ("epochs", self.epochs, self.epochs >= 1, ">= 1"),
            ("n_models", self.n_models, self.n_models >= 1, ">= 1"),
            ("batch_size", self.batch_size, self.batch_size >= 1, ">= 1"),
            ("test_batch_size", self.test_batch_size, self.test_batch_size >= 1, ">= 1"),
            ("epochs_augmented", self.epochs_augmented, self.epochs_augmented >= 0, ">= 0 (0: epochs)"),
            ("lr", self.lr, self.lr > 0, "> 0"),
            ("momentum", self.momentum, 0 <= self.momentum < 1, "in [0, 1)"),
            ("weight_decay", self.weight_decay, self.weight_decay >= 0, ">= 0"),
            ("decay_at", list(self.decay_at), all(0 <= f <= 1 for f in self.decay_at),
             "fractions of the epochs in [0, 1]"),
        ) if not ok]
        if bad:
            raise ValueError("; ".join(bad))
        if self.augment == "dsa":
            from ..augment import parse_strategy  # noqa: PLC0415

            parse_strategy(self.dsa_strategy)  # unknown ops list the valid ones
        from ..models import MODELS, WEIGHT_INITS  # noqa: PLC0415  (models import nothing from here)

        MODELS.get(self.model)
        WEIGHT_INITS.get(self.weight_init)  # unknown names list the valid ones

    def _check_training(self) -> None:
        """The optimizer, schedule, run length and the other training fields: one-line errors."""
        from ..train.optim import LR_SCHEDULES, OPTIMIZERS  # noqa: PLC0415

        for name, value, valid in (("optimizer", self.optimizer, OPTIMIZERS),
                                   ("lr_schedule", self.lr_schedule, LR_SCHEDULES),
                                   ("label_encoding", self.label_encoding, LABEL_ENCODINGS)):
            if value not in valid:
                raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")
        bad = [f"{name} must be {rule}, got {value!r}" for name, value, ok, rule in (
            ("steps", self.steps, self.steps >= 0, ">= 0 (0: count epochs)"),
            ("warmup_steps", self.warmup_steps, self.warmup_steps >= 0, ">= 0"),
            ("lr_final", self.lr_final, 0 <= self.lr_final <= 1, "in [0, 1] (a fraction of lr)"),
            ("cosine_fraction", self.cosine_fraction, 0 < self.cosine_fraction <= 1, "in (0, 1]"),
            ("rded_factor", self.rded_factor, self.rded_factor >= 1, ">= 1"),
            ("steps_by_size", [list(e) for e in self.steps_by_size],
             all(n >= 1 and k >= 1 for n, k in self.steps_by_size), "pairs [set size, steps] of positive integers"),
        ) if not ok]
        if bad:
            raise ValueError("; ".join(bad))
        by_steps = bool(self.steps or self.steps_by_size)
        if self.warmup_steps and self.lr_schedule != "cosine":
            raise ValueError(f"warmup_steps is for lr_schedule=cosine, not {self.lr_schedule!r}")
        if self.lr_schedule == "cosine" and not by_steps:
            raise ValueError("lr_schedule=cosine moves every optimizer step: give the run's length as steps=N (or "
                             "steps_by_size), or use lr_schedule=cosine_epoch")
        if self.lr_schedule == "cosine_epoch" and by_steps:
            raise ValueError("lr_schedule=cosine_epoch moves once per epoch: count the run in epochs (steps=0, no "
                             "steps_by_size), or use lr_schedule=cosine")
        if self.reference_schedule and by_steps:
            raise ValueError("reference_schedule is the reference evaluators' epoch schedule: use it with epochs "
                             "(steps=0, no steps_by_size)")
        if self.schedule == "replay":
            used = [f for f, on in (("optimizer", self.optimizer != "sgd"), ("lr_schedule", self.lr_schedule != "step"),
                                    ("steps", by_steps), ("standardize", self.standardize)) if on]
            if used:
                raise ValueError(f"schedule=replay trains by plain GD along the set's own steps; it takes no "
                                 f"{', '.join(used)}")
        if self.reference_schedule and self.lr_schedule != "step":
            raise ValueError(f"reference_schedule decays in steps of x0.1: use lr_schedule=step, not "
                             f"{self.lr_schedule!r}")

    def sized(self, set_size: int | None) -> "EvalProtocol":
        """The protocol for a set of ``set_size`` images: with ``steps=0`` and a ``steps_by_size`` table,
        the run's steps from the table (a size not in it is a `ConfigError` asking for ``steps=N``)."""
        if self.steps or not self.steps_by_size:
            return self
        table = dict(self.steps_by_size)
        if set_size not in table:
            sizes = ", ".join(str(n) for n in sorted(table))
            what = f"a set of {set_size} images" if set_size is not None else "a set of unknown size"
            raise ConfigError(f"protocol {self.name!r} takes its number of steps from the set's size ({sizes} "
                              f"images); {what} needs steps=N")
        return replace(self, steps=table[set_size])

    def optim(self, lr: float) -> "Optim":
        """How each model trains (`train.optim.Optim`), at the lr ``lr`` (the protocol's or the set's)."""
        from ..train.optim import Optim  # noqa: PLC0415

        return Optim(lr=lr, epochs=self.train_epochs, steps=self.steps, optimizer=self.optimizer,
                     momentum=self.momentum, weight_decay=self.weight_decay,
                     decay_only_weights=self.decay_only_weights, lr_schedule=self.lr_schedule,
                     milestones=self.milestones, restart_at_milestones=self.reference_schedule,
                     warmup_steps=self.warmup_steps, lr_final=self.lr_final, cosine_fraction=self.cosine_fraction)

    def resolved(self, dataset: str, model: str) -> "EvalProtocol":
        """The protocol as it runs for ``dataset`` and ``model`` (canonical names): with
        ``augment="dc"``, the DC ops of ``dc_strategy="auto"`` and the epochs they imply."""
        if self.augment != "dc":
            return self
        from ..augment.classic import dc_strategy  # noqa: PLC0415

        ops = dc_strategy(dataset, model) if self.dc_strategy == "auto" else self.dc_strategy
        augmented = ops not in ("none", "")
        epochs = self.epochs_augmented if augmented and self.epochs_augmented else self.epochs
        return replace(self, dc_strategy=ops, epochs=epochs)

    @property
    def train_epochs(self) -> int:
        """Passes over the set: ``epochs``, or ``epochs + 1`` as the reference's ``range(Epoch + 1)``."""
        return self.epochs + 1 if self.reference_schedule else self.epochs

    @property
    def milestones(self) -> tuple[int, ...]:
        """0-based epochs from which the lr is x0.1 further. Reference: its check ``ep in [E//2 + 1]``
        runs after pass ``ep``, so pass ``E//2 + 2`` is the first at the lower lr. In a run counted in
        steps, 0-based optimizer steps (``decay_at`` fractions of ``steps``). None under a cosine."""
        if self.lr_schedule != "step":
            return ()
        if self.reference_schedule:
            return (self.epochs // 2 + 2,)
        if self.steps:
            return tuple(int(f * self.steps) for f in self.decay_at)
        return tuple(int(f * self.epochs) for f in self.decay_at)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["decay_at"] = list(self.decay_at)
        d["steps_by_size"] = [list(e) for e in self.steps_by_size]
        return d

    def with_(self, **changes: Any) -> "EvalProtocol":
        return replace(self, **changes)


PROTOCOLS: Registry[EvalProtocol] = Registry("evaluation protocol")
PROTOCOLS.add("dc", EvalProtocol(name="dc"))
PROTOCOLS.add("dsa", EvalProtocol(name="dsa", epochs=1000, augment="dsa"))
PROTOCOLS.add("mtt", EvalProtocol(name="mtt", epochs=1000, augment="dsa", use_learned_lr=True))
# Dataset Distillation: replay the distilled steps with their learned step sizes on fresh (or the
# method's own fixed / held-out pretrained) networks; LeNet as in the paper's MNIST experiments.
# Fresh networks are Xavier-initialized, the distribution DD's code trains its random-init data for.
PROTOCOLS.add("dd", EvalProtocol(name="dd", model="lenet", schedule="replay", n_models=20, epochs=1,
                                 weight_init="xavier"))
# The papers' own evaluators (see the module doc); DM's code evaluates as DSA's.
PAPER = dict(reference_schedule=True, augment="dsa", dsa_flip_all=True, epochs=1000)
PROTOCOLS.add("dsa-paper", EvalProtocol(name="dsa-paper", **PAPER), aliases=("dm-paper",))
PROTOCOLS.add("mtt-paper", EvalProtocol(name="mtt-paper", use_learned_lr=True, dsa_align_corners=True, **PAPER))
# DC's code without DSA: the classic augmentation where its rule asks for it (MNIST, BatchNorm
# ConvNets) and then 1000 epochs, otherwise none and 300
PROTOCOLS.add("dc-paper", EvalProtocol(name="dc-paper", reference_schedule=True, augment="dc", epochs=300,
                                       epochs_augmented=1000))
# FRePo's script/eval.py: optimizer steps by the set's number of images (its ``step_per_prototpyes``)
FREPO_STEPS = ((10, 1000), (100, 2000), (200, 20000), (400, 5000), (500, 5000), (1000, 10000), (2000, 40000),
               (5000, 40000))
PROTOCOLS.add("frepo-paper", EvalProtocol(
    name="frepo-paper", model="convnet_frepo_eval", weight_init="lecun", optimizer="adam", lr=3e-4,
    weight_decay=0.0, lr_schedule="cosine", warmup_steps=500, lr_final=0.01, steps_by_size=FREPO_STEPS,
    batch_size=500, augment="frepo", label_loss="sse_half", label_encoding="frepo"))
# RDED's validation/main.py with the defaults of its argument.py and its CIFAR scripts (conv3 -> conv3,
# --factor 1, IPC 10 of 10 classes: batch 50); the teacher file is the run's (teacher=PATH)
PROTOCOLS.add("rded-paper", EvalProtocol(
    name="rded-paper", model="convnet_bn", optimizer="adamw", lr=1e-3, weight_decay=0.01, decay_only_weights=True,
    lr_schedule="cosine_epoch", cosine_fraction=0.5, epochs=300, batch_size=50, augment="rded", labels="teacher",
    label_loss="kl_unscaled", label_temperature=20.0))
# HaBa's evaluate_synset/epoch: MTT's evaluator with every batch standardized, its test loader's batches of 128
PROTOCOLS.add("haba-paper", EvalProtocol(name="haba-paper", use_learned_lr=True, dsa_align_corners=True,
                                         standardize=True, test_batch_size=128, **PAPER))
# Small and quick: for smoke tests and progress checks during a run, never for reported numbers.
PROTOCOLS.add("smoke", EvalProtocol(name="smoke", epochs=30, n_models=2))


def get_protocol(name: str, **overrides: Any) -> EvalProtocol:
    """A preset by name, with field overrides (unknown fields are an error naming the valid ones;
    values are type-checked and range-checked: `ConfigError`)."""
    base = PROTOCOLS.get(name)
    valid = set(base.to_dict())
    bad = sorted(set(overrides) - valid)
    if bad:
        raise ConfigError(f"unknown evaluation field(s) {bad}; valid: {', '.join(sorted(valid))}")
    # through the config's typed coercion: ``lr="abc"`` is an error naming the field, not a crash later
    protocol = from_dict(EvalProtocol, {**base.to_dict(), **overrides}, where="eval")
    if overrides.get("labels") == "teacher" and not protocol.teacher:  # a preset's own need is checked when it runs
        raise ConfigError("labels=teacher needs a teacher file: teacher=PATH (make one with `datadistill teacher`)")
    return protocol
