"""Differentiable unrolled SGD on parameter dictionaries (for DD's and MTT's inner loops).

``unrolled_sgd`` applies ``theta_{t+1} = theta_t - lr_t * grad L(theta_t; x_t, y_t)`` for each step,
keeping the graph so that a loss on the final parameters back-propagates into the images ``x_t``
and the step sizes ``lr_t`` (and into ``theta_0`` if it requires grad). Parameters are plain
tensors passed to ``torch.func.functional_call``; nothing modifies a module in place.

Memory: without checkpointing, every step's activations and its gradient graph stay alive, so
memory grows linearly with the number of steps. With ``grad_checkpoint=True`` (gradient
checkpointing) each step is wrapped in non-reentrant ``torch.utils.checkpoint``: only the parameters
between steps are kept and each step is recomputed during the backward pass (one extra
forward+backward per step): memory stays almost flat in the number of steps, for more time.
`benchmarks/dd_memory.py` measures both; its records are discussed in docs/methods/dd.md.

BatchNorm is not handled: in train mode it would update the running statistics in place (the
buffers passed in share storage with the module's), once per unrolled step and again on the
recomputation of a checkpointed step. Callers refuse such models (DD does, with
`datadistill.models.has_batchnorm`).
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.utils.checkpoint import checkpoint as _checkpoint


Params = dict[str, torch.Tensor]
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def params_of(model: nn.Module, requires_grad: bool = True) -> Params:
    """The module's parameters as detached leaf tensors (the state a functional loop starts from)."""
    return {k: v.detach().clone().requires_grad_(requires_grad) for k, v in model.named_parameters()}


def buffers_of(model: nn.Module) -> Params:
    return {k: v.detach() for k, v in model.named_buffers()}


def sgd_step(model: nn.Module, params: Params, buffers: Params, x: torch.Tensor, y: torch.Tensor,
             lr: torch.Tensor, loss_fn: Loss = F.cross_entropy, create_graph: bool = True) -> Params:
    """One differentiable SGD step; returns the new parameter dict."""
    # a fixed starting point (no grad) still needs a gradient inside the step
    params = {k: v if v.requires_grad else v.detach().requires_grad_() for k, v in params.items()}
    names = list(params)
    loss = loss_fn(functional_call(model, ({**params, **buffers}), (x,)), y)
    grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=create_graph)
    return {n: params[n] - lr * g for n, g in zip(names, grads)}


def unrolled_sgd(
    model: nn.Module,
    params: Params,
    steps: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    *,
    buffers: Params | None = None,
    loss_fn: Loss = F.cross_entropy,
    grad_checkpoint: bool = False,
) -> Params:
    """Apply the SGD steps ``(x_t, y_t, lr_t)`` differentiably, starting from ``params``."""
    buffers = buffers if buffers is not None else buffers_of(model)
    names = list(params)
    for x, y, lr in steps:
        if not grad_checkpoint:
            params = sgd_step(model, params, buffers, x, y, lr, loss_fn)
            continue

        # ``y`` is bound now: the backward pass recomputes the step after the loop has moved on
        def step(lr_: torch.Tensor, x_: torch.Tensor, *flat: torch.Tensor, y_: torch.Tensor = y) -> tuple[torch.Tensor, ...]:
            new = sgd_step(model, dict(zip(names, flat)), buffers, x_, y_, lr_, loss_fn)
            return tuple(new[n] for n in names)

        out = _checkpoint(step, lr, x, *[params[n] for n in names], use_reentrant=False)
        params = dict(zip(names, out))
    return params


def evaluate_params(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor,
                    buffers: Params | None = None, loss_fn: Loss = F.cross_entropy) -> torch.Tensor:
    """The loss of the parameters ``params`` on a batch (differentiable)."""
    buffers = buffers if buffers is not None else buffers_of(model)
    return loss_fn(functional_call(model, ({**params, **buffers}), (x,)), y)


def schedule(images: Sequence[torch.Tensor], labels: Sequence[torch.Tensor], lrs: torch.Tensor,
             epochs: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """DD's schedule: ``epochs`` passes over the steps, step ``s`` of epoch ``e`` uses
    ``lrs[e * steps + s]``."""
    n = len(images)
    if lrs.numel() != epochs * n:
        raise ValueError(f"need {epochs * n} step sizes for {epochs} epochs x {n} steps, got {lrs.numel()}")
    return [(images[s], labels[s], lrs[e * n + s]) for e in range(epochs) for s in range(n)]
