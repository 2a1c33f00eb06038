"""What the evaluation models are trained to predict: a set's classes, its label vectors, or a teacher's.

The protocol's ``labels`` field chooses (``auto``: the set's vectors when it has them, else its
classes); ``label_loss`` names the loss (`functional.labels`) and ``label_temperature`` its
temperature. ``labels="teacher"`` relabels every training batch *after* its augmentation with the
teacher's ``softmax(logits / T)`` (SRe2L and RDED's practice: the labels always describe the images
the model sees), so the same protocol applies to any set, a random subset included: that is what
makes "improvement over random" a fair comparison for soft-label methods (`evaluation.scores`).

Hard labels under the default loss keep the classic code path untouched (cross-entropy with class
indices), so every hard-label figure stays exactly what it was. Class indices under a vector loss
(``mse``, ``sse_half``, ...) become one-hot vectors, or with ``label_encoding="frepo"`` FRePo's
``(e_c - 1/C) / sqrt(C/10)`` (the labels its sets start from and its evaluation regresses on).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import math

import torch
import torch.nn.functional as F

from ..config import ConfigError
from ..data.spec import DatasetSpec
from ..functional.labels import LABEL_LOSSES, per_sample_loss
from .protocol import EvalProtocol


@dataclass
class LabelPlan:
    """How one evaluation trains: the set to draw batches from, the per-sample loss (None: cross-entropy
    with class indices) and the relabelling of each batch (None: the set's own targets)."""

    synset: Any
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None
    relabel: Callable[[torch.Tensor], torch.Tensor] | None
    info: dict[str, Any] = field(default_factory=dict)  # recorded in the report: mode, loss, T, teacher

    @property
    def hard(self) -> bool:
        return self.loss is None and self.relabel is None and not has_soft_labels(self.synset)


def frepo_targets(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """FRePo's label encoding of class indices: ``(e_c - 1/C) / sqrt(C / 10)``."""
    return (F.one_hot(labels.long(), num_classes).float() - 1.0 / num_classes) / math.sqrt(num_classes / 10)


def has_soft_labels(synset: Any) -> bool:
    """Whether the set carries label vectors (`synset.SetFeatures.label_vectors`)."""
    return synset.label_vectors() is not None


def label_plan(synset: Any, protocol: EvalProtocol, spec: DatasetSpec,
               device: torch.device | str = "cpu") -> LabelPlan:
    """The `LabelPlan` of ``protocol`` for ``synset`` on data of ``spec`` (ConfigError for a request the
    set cannot meet, e.g. soft labels of a set that has none)."""
    want = protocol.labels
    mode = want.mode
    soft = has_soft_labels(synset)
    if mode == "auto":
        mode = "soft" if soft else "hard"
    loss = want.loss
    set_t = float(synset.label_temperature) if soft else 1.0
    temperature = want.temperature if want.temperature is not None else set_t
    info: dict[str, Any] = {"labels": mode}
    relabel = None
    if mode == "hard":
        if soft:
            synset = synset.hard()
        loss = "ce" if loss == "auto" else LABEL_LOSSES.canonical(loss)
    elif mode == "soft":
        if not soft:
            raise ConfigError(f"labels=soft: this {type(synset).__name__} has no soft labels; use labels=hard, or "
                              "labels=teacher teacher=FILE to label it with a teacher")
        loss = synset.label_loss if loss == "auto" else LABEL_LOSSES.canonical(loss)
    else:  # teacher
        from ..teachers import load_teacher  # noqa: PLC0415

        if not want.teacher:
            raise ConfigError(f"labels=teacher (protocol {protocol.name!r}) needs a teacher file: teacher=PATH "
                              "(make one with `datadistill teacher`)")
        teacher = load_teacher(want.teacher, device=device)
        teacher.check_fits(spec)
        loss = "kl" if loss == "auto" else LABEL_LOSSES.canonical(loss)
        if loss == "ce":
            raise ConfigError("labels=teacher gives label vectors; label_loss=ce takes class indices (use kl, soft_ce "
                              "or mse)")
        t = temperature

        def relabel(x: torch.Tensor) -> torch.Tensor:
            return teacher.probs(x, t)

        info["teacher"] = teacher.describe()
    info.update(label_loss=loss, label_temperature=temperature)
    if loss == "ce":
        return LabelPlan(synset, None, relabel, info)
    name, t = loss, temperature
    encode = want.encoding == "frepo"
    if encode:
        info["label_encoding"] = "frepo"

    def sample_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if encode and target.ndim == 1:
            target = frepo_targets(target, logits.shape[1]).to(logits.dtype)
        return per_sample_loss(name, logits, target, t)

    return LabelPlan(synset, sample_loss, relabel, info)
