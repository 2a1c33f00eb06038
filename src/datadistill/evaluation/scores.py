"""Scores that say what a distilled set adds, after DD-Ranking (Li et al. 2025, arXiv:2505.13300).

Raw accuracy mixes three things: the images, the labels and the training recipe. A teacher's soft
labels lift a *random* subset close to the methods ("a label is worth a thousand images"), so DD-Ranking
scores a set against a random real subset of the same size under the same recipe:

- **improvement over random** ``IOR = acc(set, its labels) - acc(random subset, the same labels)``;
- **hard-label recovery** ``HLR = acc(full data, hard labels) - acc(set, hard labels)`` (how much of the
  full data's accuracy the images alone leave unrecovered: lower is better);
- **label-robust score** ``LRS = (exp(w IOR - (1 - w) HLR) - e^-1) / (e - e^-1)``, ``w = 0.5``;
- **augmentation-robust score** ``ARS``: the same normalization of ``g IOR_aug + (1 - g) IOR_noaug``.

Two deliberate departures from DD-Ranking's code, which (a) puts *percentages* in the exponential
(``exp(40)`` for a 40-point gain, which saturates the score), and (b) picks each run's learning rate
and epoch by the *test* accuracy (best over a grid and over epochs). Here the accuracies are
fractions, so the exponent lies in ``[-1, 1]`` and the score in ``[0, 1]`` as the normalization
intends; every accuracy is the final one; and an optional learning-rate grid is decided on a
validation split carved from the training set (`data.registry.validation_split`), never on the test set.

"The same labels" for the random subset: with ``labels="teacher"`` the teacher relabels its batches
exactly as the set's; a set with stored soft labels gives the random subset the teacher's
probabilities at the set's temperature when a teacher is given (DD-Ranking's single-soft-label mode),
else hard labels, and the result says which (``random_labels``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from ..config import ConfigError
from ..data.spec import LoadedDataset
from ..functional.labels import LABEL_LOSSES
from ..seeding import make_generator
from .evaluator import EvalReport, as_set_and_data, evaluate
from .labels import has_soft_labels
from .protocol import EvalProtocol

E = math.e


def normalized(alpha: float) -> float:
    """DD-Ranking's map of a weighted difference of fractions in ``[-1, 1]`` to ``[0, 1]``."""
    return (math.exp(alpha) - 1 / E) / (E - 1 / E)


def label_robust_score(ior: float, hlr: float, w: float = 0.5) -> float:
    """``LRS`` of fractions ``ior`` and ``hlr`` with weight ``w`` on ``ior``."""
    if not 0 <= w <= 1:
        raise ValueError(f"w must be in [0, 1], got {w}")
    return normalized(w * ior - (1 - w) * hlr)


def augmentation_robust_score(ior_aug: float, ior_noaug: float, gamma: float = 0.5) -> float:
    """``ARS`` of the improvements over random with and without the protocol's augmentation."""
    if not 0 <= gamma <= 1:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    return normalized(gamma * ior_aug + (1 - gamma) * ior_noaug)


@dataclass
class Scores:
    """The accuracies (fractions, means over the protocol's models) and the scores built from them."""

    accuracy: float  # the set, with its labels and the protocol
    random: float  # a random real subset of the same size, same protocol and labels
    hard: float  # the set with hard labels
    full: float  # the whole training set with hard labels (given: see `score_set`)
    random_labels: str = "hard"
    accuracy_noaug: float | None = None  # the set and the random subset without augmentation (ARS)
    random_noaug: float | None = None
    lr: dict[str, float] = field(default_factory=dict)  # the learning rate of each run (chosen on validation)
    reports: dict[str, EvalReport] = field(default_factory=dict)

    @property
    def ior(self) -> float:
        return self.accuracy - self.random

    @property
    def hlr(self) -> float:
        return self.full - self.hard

    @property
    def lrs(self) -> float:
        return label_robust_score(self.ior, self.hlr)

    @property
    def ars(self) -> float | None:
        if self.accuracy_noaug is None or self.random_noaug is None:
            return None
        return augmentation_robust_score(self.ior, self.accuracy_noaug - self.random_noaug)

    def to_dict(self) -> dict[str, Any]:
        """Percentage points for the accuracies and differences (as every record), scores in [0, 1]."""
        pct = lambda v: None if v is None else round(100 * v, 4)  # noqa: E731
        out = {"accuracy": pct(self.accuracy), "random": pct(self.random), "hard": pct(self.hard),
               "full": pct(self.full), "ior": pct(self.ior), "hlr": pct(self.hlr), "lrs": round(self.lrs, 6),
               "random_labels": self.random_labels, "lr": self.lr}
        if self.ars is not None:
            out.update(accuracy_noaug=pct(self.accuracy_noaug), random_noaug=pct(self.random_noaug),
                       ars=round(self.ars, 6))
        return out

    def summary(self) -> str:
        s = (f"accuracy {100 * self.accuracy:.2f}%, random subset {100 * self.random:.2f}% ({self.random_labels} "
             f"labels): improvement over random {100 * self.ior:+.2f} points; hard labels {100 * self.hard:.2f}% vs "
             f"full data {100 * self.full:.2f}%: hard-label recovery {100 * self.hlr:.2f} points; LRS {self.lrs:.4f}")
        return s + (f"; ARS {self.ars:.4f}" if self.ars is not None else "")


def random_subset(data: LoadedDataset, ipc: int, seed: int = 0):
    """``ipc`` random training images per class as a plain set (the ``random`` baseline's draw)."""
    from ..synset import PixelSet  # noqa: PLC0415

    return PixelSet.from_real(data.train, ipc, make_generator(seed, "random-subset"))


def score_set(synset: Any, data: LoadedDataset, protocol: EvalProtocol, *, full_accuracy: float,
              random_set: Any = None, random_seed: int = 0, model: str | None = None,
              device: torch.device | str = "cpu", validation: LoadedDataset | None = None,
              lr_grid: Sequence[float] = (), augmentation: bool = False, progress: bool = False) -> Scores:
    """DD-Ranking's scores of ``synset`` (a set or a loaded file) on ``data`` under ``protocol``.

    ``full_accuracy`` (a fraction) is the whole training set's hard-label accuracy with the same model:
    full-data training does not follow a distilled set's protocol (its epochs and batches are those of
    a real training run), so the caller measures it once (`evaluate_full`, or ``datadistill evaluate
    --full``) and passes it in. ``random_set`` defaults to `random_subset` with ``random_seed`` (pass
    the set itself to check that it scores zero improvement). ``lr_grid``: candidate learning rates,
    each run's chosen by the final accuracy on ``validation`` (data whose test part is held-out
    training images, `load_dataset(..., validation=F)`), required with a grid. ``augmentation``: also
    evaluate both sets without the protocol's augmentation, for ``ARS``.
    """
    if not 0 <= full_accuracy <= 1:
        raise ConfigError(f"full_accuracy is a fraction in [0, 1], got {full_accuracy} (a percentage?)")
    if lr_grid and validation is None:
        raise ConfigError("a learning-rate grid needs validation data (load_dataset(name, validation=0.1)); the "
                          "test set never chooses a hyper-parameter")
    synset, data = as_set_and_data(synset, data)
    ipc = int(synset.ipc)
    if random_set is None:
        random_set = random_subset(data, ipc, random_seed)
    random_labels = "hard"
    random_protocol = protocol
    mode = protocol.labels.mode if protocol.labels.mode != "auto" else ("soft" if has_soft_labels(synset) else "hard")
    if mode == "teacher":
        random_labels = "teacher"
    elif mode == "soft" and not has_soft_labels(random_set):
        if protocol.labels.teacher:
            random_set = _teacher_labelled(random_set, synset, protocol, data, device)
            random_labels = "teacher (stored)"
        else:
            random_protocol = protocol.with_(labels="hard", label_loss="auto")
    elif mode == "soft":
        random_labels = "soft"
    hard_protocol = protocol.with_(labels="hard", label_loss="auto")

    def run(name: str, s: Any, p: EvalProtocol) -> float:
        lr = _choose_lr(s, validation, p, lr_grid, model, device) if lr_grid else p.optimizer.lr
        r = evaluate(s, data, p.with_(lr=lr), model=model, device=device, progress=progress)
        out.reports[name], out.lr[name] = r, r.lr
        return r.mean

    out = Scores(0.0, 0.0, 0.0, float(full_accuracy), random_labels=random_labels)
    out.accuracy = run("set", synset, protocol)
    out.random = run("random", random_set, random_protocol)
    plain = protocol.labels.loss == "auto" or LABEL_LOSSES.canonical(protocol.labels.loss) == "ce"
    if mode == "hard" and plain:  # the set's own run was already the hard-label one: not trained twice
        out.hard, out.reports["hard"], out.lr["hard"] = out.accuracy, out.reports["set"], out.lr["set"]
    else:
        out.hard = run("hard", synset, hard_protocol)
    if augmentation:
        if protocol.augment.name == "none":
            raise ConfigError("ARS compares training with and without augmentation; this protocol has none "
                              "(use a dsa protocol)")
        out.accuracy_noaug = run("set_noaug", synset, protocol.with_(augment="none"))
        out.random_noaug = run("random_noaug", random_set, random_protocol.with_(augment="none"))
    return out


def _choose_lr(synset: Any, validation: LoadedDataset | None, protocol: EvalProtocol, grid: Sequence[float],
               model: str | None, device: torch.device | str) -> float:
    """The grid's learning rate with the best final validation accuracy (ties: the first)."""
    assert validation is not None
    best, best_acc = grid[0], -1.0
    for lr in grid:
        acc = evaluate(synset, validation, protocol.with_(lr=float(lr), use_learned_lr=False), model=model,
                       device=device).mean
        if acc > best_acc:
            best, best_acc = float(lr), acc
    return best


def _teacher_labelled(random_set: Any, synset: Any, protocol: EvalProtocol, data: LoadedDataset,
                      device: torch.device | str):
    """The random subset with the teacher's probabilities at the set's temperature stored as its soft
    labels, under the set's loss."""
    from ..synset import PixelSet  # noqa: PLC0415
    from ..teachers import load_teacher  # noqa: PLC0415

    teacher = load_teacher(protocol.labels.teacher, device=device)
    teacher.check_fits(data.spec)
    t = protocol.labels.temperature or synset.label_temperature
    images, labels = random_set.materialize()
    return PixelSet(images, labels, random_set.num_classes, soft_labels=teacher.probs(images, t).cpu(),
                    label_loss=synset.label_loss, label_temperature=t)
