"""Several evaluation models trained as one batched computation (``evaluate(..., batch_models=N)``).

The N models of a group are stacked parameter by parameter (`torch.func.stack_module_state`) and run
as one network through ``vmap(functional_call)``: a convolution over N models becomes one grouped
convolution, a linear layer one batched matrix multiply. Each model is still trained exactly as
`train.train_classifier` trains it alone, so the results agree with the sequential path up to float
rounding (other kernels, other summation order):

- model i starts from ``create_model(..., seed=protocol.seed * 1000 + i)`` and draws its batches and
  augmentations from its own generator ``make_generator(seed, "eval-train")``, in the order the
  sequential loop draws them (its batch, then that batch's augmentation);
- the loss is the sum over models of each model's mean cross-entropy, so each model's gradient is
  its own; SGD (momentum, weight decay), Adam and AdamW are elementwise, so one optimizer over the
  stacked tensors is N independent optimizers, with the protocol's lr schedule and run length
  (`train.optim`, shared with the sequential loop) and restarted at the milestones as it is;
- the protocol's augmentation (any registered one) and its per-batch standardization act on each
  model's batch with that model's generator, and the test set is standardized as the sequential
  path sees it. Labels other than hard class indices under cross-entropy (soft labels, a teacher,
  another loss) are not batched: `evaluate` trains those models one after another.
- on the CPU each model's batch goes forward and backward in the sequential path's chunks
  (`functional.chunked`), so its gradient is summed in the same order.

BatchNorm works: its running statistics are stacked buffers that the vmapped forward updates in
place, one row per model (and, as alone, a model with BatchNorm is never chunked). A model that
draws randomness in its forward (dropout) or whose BatchNorm keeps a cumulative average
(``momentum=None``) cannot be batched: `UnbatchableModelError`.

Memory: training holds N models' activations at once (N times one model's); the test pass runs all N
models on each test chunk, with chunks cut so that one pass holds at most ``test_batch_size``
image-model pairs (the sequential pass's largest batch).

Where it pays is mostly a GPU, which one small ConvNet on a 100-image batch leaves mostly idle; on a
CPU the work is the same and vmap adds copies between layers (its grouped convolutions and norms
rearrange the model dimension), so the sequential loop may well be as fast. Measure with
``benchmarks/batched_eval.py`` before choosing.
"""

from __future__ import annotations

import copy
from typing import Callable, Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap
from tqdm.auto import tqdm

from ..config import ConfigError
from ..data.spec import DatasetSpec, RealData
from ..functional.chunked import pick_chunk
from ..models import create_model, has_batchnorm
from ..seeding import make_generator
from ..train.loop import Augment, Batches
from ..train.optim import Optim, Stepper
from .protocol import EvalProtocol

Stacked = dict[str, Tensor]


class UnbatchableModelError(ConfigError):
    """A model that cannot be trained batched with others; the message names it and what to do."""


def check_batchable(net: nn.Module, model: str) -> None:
    """`UnbatchableModelError` when ``net`` cannot be vmapped over models with the same result as
    training it alone: dropout (its masks come from the global RNG), or BatchNorm with a cumulative
    average (``momentum=None`` reads its counter as a Python number)."""
    for name, m in net.named_modules():
        why = None
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0:
            why = "draws dropout masks in its forward"
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and m.momentum is None:
            why = "keeps a cumulative BatchNorm average (momentum=None)"
        if why:
            raise UnbatchableModelError(f"model {model!r} cannot be trained batched: its layer {name!r} {why}; "
                                        "use --batch-models 1 (batch_models=1)")


def stack(nets: Sequence[nn.Module]) -> tuple[nn.Module, Stacked, Stacked]:
    """``(base, params, buffers)``: ``nets`` stacked along a new first dimension (leaf tensors on
    the nets' device) and a parameter-free copy of the first (on the meta device) to call them with."""
    params, buffers = stack_module_state(list(nets))
    return copy.deepcopy(nets[0]).to("meta"), params, buffers


def lockstep(batches: Batches, generators: Sequence[torch.Generator], batch_size: int, augment: Augment | None,
             device: torch.device | str) -> Iterator[tuple[Tensor, Tensor]]:
    """One epoch of every model's batches side by side: ``(x [N, B, ...], y [N, B])``. Model i's batch
    and then its augmentation are drawn from ``generators[i]``, as `train_classifier` draws them."""
    its = [iter(batches(batch_size, g)) for g in generators]
    while True:
        xs, ys = [], []
        for it, g in zip(its, generators):
            batch = next(it, None)
            if batch is not None:
                x, y = batch[0].detach().to(device), batch[1].to(device)
                xs.append(augment(x, g) if augment is not None else x)
                ys.append(y)
        if not xs:
            return
        if len(xs) < len(its) or len({(x.shape, y.shape) for x, y in zip(xs, ys)}) > 1:
            raise ValueError("the set yields batches of different numbers or sizes for different generators; "
                             "it cannot be evaluated batched (use batch_models=1)")
        yield torch.stack(xs), torch.stack(ys)


def _losses(base: nn.Module) -> Callable[..., Tensor]:
    """``(params, buffers, x [N, b, ...], y [N, b], n) -> [N]``: each model's summed loss over its
    ``b`` samples divided by ``n`` (its batch size): one chunk's share of the model's mean loss."""

    def one(params: Stacked, buffers: Stacked, x: Tensor, y: Tensor, n: int) -> Tensor:
        return F.cross_entropy(functional_call(base, (params, buffers), (x,)), y, reduction="sum") / n

    return vmap(one, in_dims=(0, 0, 0, 0, None))


def train_stacked(
    base: nn.Module,
    params: Stacked,
    buffers: Stacked,
    batches: Batches,
    generators: Sequence[torch.Generator],
    *,
    epochs: int,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    milestones: tuple[int, ...] = (),
    batch_size: int = 256,
    augment: Augment | None = None,
    device: torch.device | str = "cpu",
    chunk: int | None = None,
    restart_at_milestones: bool = False,
    optim: Optim | None = None,
) -> tuple[Stacked, Stacked]:
    """`train.train_classifier` for N stacked models (``generators[i]`` is model i's), one optimizer
    step for all of them per batch; ``params`` and ``buffers`` are updated in place and returned.
    ``chunk``: samples per model per forward-backward pass (None: the whole batch). ``optim``
    (`train.optim`) replaces the SGD arguments as in `train_classifier`: SGD, Adam and AdamW are
    elementwise, so one optimizer over the stacked tensors is N independent ones."""
    base.train()
    losses = _losses(base)
    if optim is None:
        optim = Optim(lr=lr, epochs=epochs, momentum=momentum, weight_decay=weight_decay, milestones=milestones,
                      restart_at_milestones=restart_at_milestones)
    run = Stepper(optim, [(k, p) for k, p in params.items() if p.requires_grad], stacked=True)
    for _, opt in run.epochs():
        for x, y in lockstep(batches, generators, batch_size, augment, device):
            opt.zero_grad(set_to_none=True)
            n = x.shape[1]
            step = chunk if chunk and chunk < n else n
            for i in range(0, n, step):  # sum over models: each model's gradient is its own
                losses(params, buffers, x[:, i : i + step], y[:, i : i + step], n).sum().backward()
            run.step()
            if run.done:
                break
    return params, buffers


@torch.no_grad()
def accuracies(base: nn.Module, params: Stacked, buffers: Stacked, data: RealData, batch_size: int = 500,
               device: torch.device | str = "cpu") -> list[float]:
    """Top-1 accuracy (fraction) of each stacked model on ``data`` in eval mode: every test chunk goes
    through all N models in one vmapped forward. A chunk has the images of the sequential pass
    (`train.accuracy`), fewer where N of them would exceed ``batch_size`` image-model pairs."""
    base.eval()
    n_models = next(iter(params.values())).shape[0]
    size = min(batch_size, pick_chunk(device, True) or batch_size, max(1, batch_size // n_models))
    predict = vmap(lambda p, b, x: functional_call(base, (p, b), (x,)).argmax(1), in_dims=(0, 0, None))
    correct = torch.zeros(n_models, dtype=torch.long, device=device)
    for i in range(0, len(data), size):
        x = data.images[i : i + size].to(device)
        y = data.labels[i : i + size].to(device)
        correct += (predict(params, buffers, x) == y).sum(1)
    base.train()
    return [c / max(len(data), 1) for c in correct.tolist()]


def evaluate_batched(
    batches: Batches,
    test: RealData,
    spec: DatasetSpec,
    protocol: EvalProtocol,
    model: str,
    *,
    indices: Iterable[int],
    batch_models: int,
    lr: float,
    augment: Augment | None = None,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> tuple[list[float], list[int]]:
    """The evaluator's standard schedule for models ``indices``, ``batch_models`` at a time (the last
    group smaller): ``(accuracies, seeds)`` in the order of ``indices``, as the sequential loop
    gives them."""
    indices = list(indices)
    accs: list[float] = []
    seeds: list[int] = []
    bar = tqdm(total=len(indices), desc=f"evaluate {model} (x{batch_models})", disable=not progress, leave=False)
    for start in range(0, len(indices), batch_models):
        group = [protocol.seed * 1000 + i for i in indices[start : start + batch_models]]
        nets = [create_model(model, spec.channels, spec.num_classes, spec.image_size, seed=seed,
                             weight_init=protocol.weight_init).to(device) for seed in group]
        check_batchable(nets[0], model)
        base, params, buffers = stack(nets)
        del nets  # only the stacked copy stays in memory
        train_stacked(
            base, params, buffers, batches, [make_generator(seed, "eval-train") for seed in group],
            epochs=protocol.schedule.train_epochs, lr=lr, batch_size=protocol.batch_size, augment=augment,
            device=device, chunk=pick_chunk(device, independent=not has_batchnorm(base)), optim=protocol.optim(lr),
        )
        accs += accuracies(base, params, buffers, test, protocol.test_batch_size, device)
        seeds += group
        bar.update(len(group))
    bar.close()
    return accs, seeds
