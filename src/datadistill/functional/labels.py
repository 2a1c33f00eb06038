"""Training losses against hard or soft labels, per sample (the evaluator and the methods sum them).

A distilled set may carry per-image label vectors instead of (or beside) class indices: the
probabilities of a teacher (RDED, SRe2L), labels learned with the images (DATM), or real-valued
regression targets (FRePo, KIP). How a network is trained on them is named by one of:

- ``ce``: cross-entropy with hard labels (class indices, ``long [B]``), the classic evaluation;
- ``soft_ce``: ``-sum_c p_c log softmax(z)_c`` with target probabilities ``p`` (DATM). With one-hot
  ``p`` it is exactly ``ce``;
- ``kl``: ``T^2 * KL(p || softmax(z / T))`` (Hinton et al.'s distillation loss; SRe2L and RDED's
  relabelling), ``p`` already the teacher's softmax at the same ``T``. The ``T^2`` keeps the
  gradient's scale independent of ``T``;
- ``kl_unscaled``: ``KL(p || softmax(z / T))`` without the ``T^2``: ``nn.KLDivLoss(reduction="batchmean")``
  on ``log_softmax(z / T)``, as RDED's (and SRe2L's) student training computes it;
- ``mse``: ``mean_c (z_c - y_c)^2`` against real-valued targets (the kernel methods' labels);
- ``sse_half``: ``1/2 sum_c (z_c - y_c)^2``, FRePo's squared loss (its reference code's
  ``mean_squared_loss``): ``C/2`` times ``mse``, so its gradient is ``C/2`` times larger.

Every function returns one loss per sample (``[B]``), so a caller may sum chunks and divide by the
batch size (`functional.chunked`) and get the mean exactly.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..registry import Registry

LabelLoss = Callable[[Tensor, Tensor, float], Tensor]
LABEL_LOSSES: Registry[LabelLoss] = Registry("label loss")


@LABEL_LOSSES.register("ce", "cross_entropy", "hard")
def hard_ce(logits: Tensor, target: Tensor, temperature: float = 1.0) -> Tensor:
    if target.ndim != 1:
        raise ValueError(f"the ce loss takes class indices [B]; got targets of shape {tuple(target.shape)} "
                         "(use soft_ce, kl or mse for label vectors)")
    return F.cross_entropy(logits, target, reduction="none")


@LABEL_LOSSES.register("soft_ce", "sce")
def soft_ce(logits: Tensor, target: Tensor, temperature: float = 1.0) -> Tensor:
    target = _vectors(target, logits, "soft_ce")
    return F.cross_entropy(logits, target, reduction="none")


@LABEL_LOSSES.register("kl", "kd")
def kl(logits: Tensor, target: Tensor, temperature: float = 1.0) -> Tensor:
    target = _vectors(target, logits, "kl")
    log_q = F.log_softmax(logits / temperature, dim=1)
    # sum_c p (log p - log q), with 0 log 0 = 0
    return temperature ** 2 * (torch.xlogy(target, target) - target * log_q).sum(1)


@LABEL_LOSSES.register("kl_unscaled")
def kl_unscaled(logits: Tensor, target: Tensor, temperature: float = 1.0) -> Tensor:
    target = _vectors(target, logits, "kl_unscaled")
    log_q = F.log_softmax(logits / temperature, dim=1)
    return (torch.xlogy(target, target) - target * log_q).sum(1)


@LABEL_LOSSES.register("mse")
def mse(logits: Tensor, target: Tensor, temperature: float = 1.0) -> Tensor:
    target = _vectors(target, logits, "mse")
    return (logits - target).pow(2).mean(1)


@LABEL_LOSSES.register("sse_half")
def sse_half(logits: Tensor, target: Tensor, temperature: float = 1.0) -> Tensor:
    target = _vectors(target, logits, "sse_half")
    return 0.5 * (logits - target).pow(2).sum(1)


def _vectors(target: Tensor, logits: Tensor, name: str) -> Tensor:
    """Class indices become one-hot vectors (a hard-labelled set under a soft loss); vectors must
    match the logits' shape."""
    if target.ndim == 1:
        return F.one_hot(target.long(), logits.shape[1]).to(logits.dtype)
    if target.shape != logits.shape:
        raise ValueError(f"{name}: label vectors of shape {tuple(target.shape)} for logits of shape "
                         f"{tuple(logits.shape)}")
    return target.to(logits.dtype)


def per_sample_loss(name: str, logits: Tensor, target: Tensor, temperature: float = 1.0) -> Tensor:
    """The loss ``name`` (`LABEL_LOSSES`) of each sample, ``[B]``."""
    return LABEL_LOSSES.get(name)(logits, target, temperature)


def label_loss(name: str, temperature: float = 1.0) -> Callable[[Tensor, Tensor], Tensor]:
    """``(logits, target) -> mean loss``: the loss ``name`` at ``temperature``, as a ``loss_fn``
    for the unrolled inner loops (`functional.unroll`)."""
    fn = LABEL_LOSSES.get(name)  # an unknown name lists the valid ones now, not at the first step
    if not temperature > 0:
        raise ValueError(f"the label temperature must be > 0, got {temperature}")

    def loss(logits: Tensor, target: Tensor) -> Tensor:
        return fn(logits, target, temperature).mean()

    return loss
