"""The one standard training loop (used by evaluation, baselines and, later, expert trajectories)."""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..data.spec import RealData
from ..functional.chunked import chunked_backward, pick_chunk
from ..models import has_batchnorm
from .optim import Optim, Stepper
from .sam import SharpnessAware, sharpness_aware_grads

Batches = Callable[[int, torch.Generator], Iterable[tuple[torch.Tensor, torch.Tensor]]]
Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
# ``(logits, targets) -> [B]``: one loss per sample (`functional.labels`); None: cross-entropy, class indices
SampleLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Relabel = Callable[[torch.Tensor], torch.Tensor]  # a training batch's images -> its targets (a teacher)


def real_batches(data: RealData) -> Batches:
    """Epoch iterator over shuffled batches of a `RealData` (the ``batches`` of a set)."""

    def batches(batch_size: int, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        perm = torch.randperm(len(data), generator=generator).to(data.device)
        for i in range(0, len(data), batch_size):
            idx = perm[i : i + batch_size]
            yield data.images[idx], data.labels[idx]

    return batches


def train_classifier(
    model: nn.Module,
    batches: Batches,
    *,
    epochs: int,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    milestones: tuple[int, ...] = (),
    batch_size: int = 256,
    generator: torch.Generator,
    augment: Augment | None = None,
    device: torch.device | str = "cpu",
    progress: bool = False,
    desc: str = "train",
    channels_last: bool = True,
    on_epoch_end: Callable[[int, nn.Module], None] | None = None,
    restart_at_milestones: bool = False,
    loss: SampleLoss | None = None,
    relabel: Relabel | None = None,
    sam: SharpnessAware | None = None,
    optim: Optim | None = None,
    resume: dict | None = None,
    on_checkpoint: Callable[[dict], None] | None = None,
) -> nn.Module:
    """Train ``model`` with SGD and a step learning-rate schedule; returns it (in train mode).

    ``batches(batch_size, generator)`` yields one epoch of (images, labels); ``augment(x, generator)``
    is applied to every batch with fresh parameters. ``channels_last`` only changes the memory
    layout (faster convolutions on CPU and GPU), never the result beyond float rounding.
    ``on_epoch_end(epoch, model)`` runs after each epoch (0-based), e.g. to record the weights.
    ``restart_at_milestones``: at each milestone a new SGD optimizer replaces the old one (its
    momentum starts again from zero), as the DC/DSA/DM/MTT reference evaluators do at their decay.
    ``loss(logits, targets) -> [B]`` replaces cross-entropy with class indices (soft labels:
    `functional.labels`); ``relabel(x)`` gives each batch's targets *after* augmentation (a teacher
    labelling exactly the images the model sees, as SRe2L and RDED train).
    ``sam``: each step goes along FTD's sharpness-aware direction (`train.sam`; two passes per batch).
    ``optim``: another optimizer, lr schedule or run length (`train.optim`: Adam, cosine, a number of
    steps); it replaces ``epochs``, ``lr``, ``momentum``, ``weight_decay``, ``milestones`` and
    ``restart_at_milestones``.
    ``on_checkpoint(state)`` gets, after each epoch, everything the run needs to go on (the next
    epoch, the model's and optimizer's state, the step count, the generator's state); ``resume=state``
    goes on from such a state exactly as the run would have (tested bit for bit on the CPU).
    On the CPU a batch goes forward and backward in chunks whose gradients add up to the batch's
    (`functional.chunked`), unless the model has BatchNorm, whose statistics span the batch.
    """
    model.to(device).train()
    chunk = pick_chunk(device, independent=not has_batchnorm(model))
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    if optim is None:
        optim = Optim(lr=lr, epochs=epochs, momentum=momentum, weight_decay=weight_decay, milestones=milestones,
                      restart_at_milestones=restart_at_milestones)
    run = Stepper(optim, list(model.named_parameters()))
    start = 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        run.load_state_dict(resume)
        generator.set_state(resume["generator"])
        start = int(resume["epoch"])
    for epoch, opt in tqdm(run.epochs(start), total=run.total_epochs, initial=start, desc=desc, disable=not progress,
                           leave=False):
        for x, y in batches(batch_size, generator):
            x, y = x.detach().to(device), y.to(device)
            if augment is not None:
                x = augment(x, generator)
            if relabel is not None:
                y = relabel(x)
            if x.ndim == 4:
                x = x.contiguous(memory_format=fmt)
            opt.zero_grad(set_to_none=True)
            if sam is None:
                chunked_backward(model, x, y, chunk, loss)
            else:
                sharpness_aware_grads(model, lambda: chunked_backward(model, x, y, chunk, loss), sam)
            run.step()
            if run.done:
                break
        if on_epoch_end is not None:
            on_epoch_end(epoch, model)
        if on_checkpoint is not None:
            on_checkpoint({"epoch": epoch + 1, "model": model.state_dict(), "generator": generator.get_state(),
                           **run.state_dict()})
    return model


def replay_steps(model: nn.Module, steps, device: torch.device | str = "cpu") -> nn.Module:
    """Train ``model`` by plain gradient descent along a fixed schedule ``[(x, y, lr)]`` (Dataset
    Distillation's evaluation: the distilled steps with their learned step sizes, in order)."""
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    for x, y, lr in steps:
        loss = F.cross_entropy(model(x.detach().to(device)), y.to(device))
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g in zip(params, grads):
                p.sub_(float(lr) * g)
    return model


@torch.no_grad()
def accuracy(model: nn.Module, data: RealData, batch_size: int = 500, device: torch.device | str = "cpu",
             channels_last: bool = True) -> float:
    """Top-1 accuracy (fraction) of ``model`` on ``data`` in eval mode. On the CPU the batches are cut
    to ``CPU_CHUNK`` images (faster: `functional.chunked`; eval mode makes no prediction depend on
    the batch)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(device).eval()
    model.to(memory_format=fmt)
    correct = 0
    batch_size = min(batch_size, pick_chunk(device, True) or batch_size)
    with torch.no_grad():  # no graph: nothing saved for a backward that never comes
        for i in range(0, len(data), batch_size):
            x = data.images[i : i + batch_size].to(device).contiguous(memory_format=fmt)
            y = data.labels[i : i + batch_size].to(device)
            correct += int((model(x).argmax(1) == y).sum())
    model.train()
    return correct / max(len(data), 1)
