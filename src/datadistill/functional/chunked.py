"""Gradients of a mean loss computed over chunks of the batch, then summed.

Why: on the CPU a batch of a few hundred 28x28 images through a 128-channel ConvNet makes activation
tensors of 50-250 MB per layer. The allocator hands such tensors out as fresh pages that the kernel
must fault in and zero at every call, and they do not fit any cache; chunks of 16-32 images reuse
the same memory and stay in cache. The mean loss over ``n`` samples is the sum over chunks of the
chunk's summed loss divided by ``n``, so the gradient is the same up to float summation order, as
long as no sample's output depends on another's: no BatchNorm in training mode (the caller checks).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def mean_ce_grads(logits_fn: Callable[[Tensor], Tensor], params: Sequence[Tensor], x: Tensor, y: Tensor,
                  chunk: int | None, create_graph: bool = False) -> tuple[Tensor, ...]:
    """``d/dparams mean_i CE(logits_fn(x)_i, y_i)``, forward and backward ``chunk`` samples at a time
    (``None`` or ``chunk >= len(x)``: one pass)."""
    n = x.shape[0]
    if not chunk or chunk >= n:
        return torch.autograd.grad(F.cross_entropy(logits_fn(x), y), params, create_graph=create_graph)
    total: list[Tensor] | None = None
    for i in range(0, n, chunk):
        loss = F.cross_entropy(logits_fn(x[i : i + chunk]), y[i : i + chunk], reduction="sum") / n
        g = torch.autograd.grad(loss, params, create_graph=create_graph)
        total = list(g) if total is None else [a + b for a, b in zip(total, g)]
    return tuple(total)  # type: ignore[arg-type]


def chunked_backward(logits_fn: Callable[[Tensor], Tensor], x: Tensor, y: Tensor, chunk: int | None,
                     loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None) -> Tensor:
    """``mean_i L(logits_fn(x)_i, y_i).backward()`` a chunk at a time (gradients accumulate in ``.grad``);
    returns the detached mean loss. ``L`` is cross-entropy with class indices, or ``loss_fn(logits,
    y) -> [B]`` (one loss per sample, e.g. `functional.labels.per_sample_loss` for label vectors)."""
    n = x.shape[0]
    if loss_fn is None:
        def summed(logits: Tensor, target: Tensor) -> Tensor:
            return F.cross_entropy(logits, target, reduction="sum")
    else:
        def summed(logits: Tensor, target: Tensor) -> Tensor:
            return loss_fn(logits, target).sum()
    if not chunk or chunk >= n:
        loss = F.cross_entropy(logits_fn(x), y) if loss_fn is None else loss_fn(logits_fn(x), y).mean()
        loss.backward()
        return loss.detach()
    total = x.new_zeros(())
    for i in range(0, n, chunk):
        loss = summed(logits_fn(x[i : i + chunk]), y[i : i + chunk]) / n
        loss.backward()
        total += loss.detach()
    return total


CPU_CHUNK = 16  # images per chunk on the CPU (benchmarks/speed_dc.py, benchmarks/speed_dm.py)


def pick_chunk(device: torch.device | str, independent: bool) -> int | None:
    """The chunk size for ``device``: ``CPU_CHUNK`` on the CPU when the samples are independent (no
    BatchNorm in training mode), else ``None`` (on a GPU one large batch is faster)."""
    return CPU_CHUNK if torch.device(device).type == "cpu" and independent else None
