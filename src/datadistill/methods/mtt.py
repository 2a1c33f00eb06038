"""Trajectory matching (MTT).

Cazenavette, Wang, Torralba, Efros, Zhu, "Dataset Distillation by Matching Training Trajectories",
CVPR 2022 (arXiv 2203.11932).

Expert networks trained on the real data store their parameters after every epoch
(`datadistill.experts`, ``datadistill experts``). Each iteration:

1. pick an expert at random and a start epoch ``t`` uniformly in ``0 .. max_start_epoch - 1`` (as
   the reference draws it); the student starts from the expert's ``theta*_t``;
2. run ``syn_steps`` differentiable SGD steps on synthetic mini-batches (``batch_syn`` images, a
   fresh permutation whenever the images are used up; all images per step by default), each batch
   through DSA with fresh parameters, with the **learned step size** ``alpha``;
3. minimize ``||theta_student - theta*_{t+M}||^2 / ||theta*_t - theta*_{t+M}||^2``
   (``M = expert_epochs``) with respect to the images and ``alpha``: SGD with momentum 0.5 on both
   (lr ``lr_img`` and ``lr_lr``); ``alpha`` starts at ``lr_teacher``.

The student lives as a parameter dictionary and every step goes through
``torch.func.functional_call`` (`functional.unroll.unrolled_sgd`); ``checkpoint=True`` recomputes
each step in the backward pass instead of keeping its activations (memory for time, as for DD).

Failure modes guarded: ``alpha`` is clamped to ``>= min_lr`` after every update (it can be pushed
negative), and a non-finite loss or gradient, or an ``alpha`` above ``max_lr``, stops the run with
`DivergenceError` *before* the update is applied; the engine then checkpoints the last good state.

Evaluation (the ``mtt`` protocol) trains fresh networks with the learned ``alpha`` as their
learning rate, as MTT does. The set is a `PixelSet` whose ``log_lr`` holds ``alpha``.

Defaults are the reference code's (``syn_steps`` 20, ``expert_epochs`` 3, ``max_start_epoch`` 25,
``lr_img`` 1000, ``lr_lr`` 1e-5, ``lr_teacher`` 0.01, DSA on); the paper's per-setting values are
presets (``--preset mtt-cifar10-ipc1`` ...). BatchNorm students are refused: the experts store
parameters only, and an unrolled BatchNorm would update running statistics in place.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from ..augment import DSAConfig, apply, parse_strategy, sample_params
from ..config import ConfigError
from ..functional.trajectory import trajectory_loss
from ..functional.unroll import buffers_of, unrolled_sgd
from ..models import create_model, has_batchnorm
from ..synset import PixelSet
from .base import Context, DivergenceError, MethodEntry, MethodHooks, register_method


@dataclass(frozen=True)
class MTTConfig:
    experts: str | None = None  # expert folder; None: the default folder of (dataset, model, zca)
    model: str = "convnet"
    syn_steps: int = 20
    expert_epochs: int = 3
    max_start_epoch: int = 25
    lr_img: float = 1000.0
    lr_lr: float = 1e-05
    lr_teacher: float = 0.01  # the initial synthetic step size alpha
    momentum: float = 0.5
    batch_syn: int | None = None  # synthetic images per unrolled step; None: all of them
    dsa: bool = True
    dsa_strategy: str = "color_crop_cutout_flip_scale_rotate"
    checkpoint: bool = False  # gradient checkpointing of the unrolled steps
    min_lr: float = 1e-6  # alpha is clamped to at least this after every update
    max_lr: float = 1.0  # alpha above this stops the run (DivergenceError)

    def __post_init__(self) -> None:
        check_matching_config(self)

    @property
    def epochs_needed(self) -> int:
        """Epochs an expert must have stored: the latest start plus the matched span."""
        return self.max_start_epoch - 1 + self.expert_epochs


def check_matching_config(cfg: Any) -> None:
    """Validation shared by the trajectory-matching configs (MTT, HaBa)."""
    for name in ("syn_steps", "expert_epochs", "max_start_epoch"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.batch_syn is not None and cfg.batch_syn < 1:
        raise ValueError(f"batch_syn must be >= 1 or null, got {cfg.batch_syn}")
    if not 0 < cfg.min_lr <= cfg.lr_teacher < cfg.max_lr:
        raise ValueError(f"need 0 < min_lr <= lr_teacher < max_lr, got {cfg.min_lr}, {cfg.lr_teacher}, {cfg.max_lr}")
    for f in dataclasses.fields(cfg):  # the optimizers' settings: lr_img, lr_lr, momentum ...
        v = getattr(cfg, f.name)
        if f.name.startswith("lr_") and v is not None and not v >= 0:
            raise ValueError(f"{f.name} must be >= 0, got {v}")
        if f.name.startswith("momentum") and not 0 <= v < 1:
            raise ValueError(f"{f.name} must be in [0, 1), got {v}")
    if cfg.dsa:
        parse_strategy(cfg.dsa_strategy)  # unknown ops list the valid ones


def mtt_synset(cfg: MTTConfig, data, ipc: int, init: str, generator: torch.Generator) -> PixelSet:
    """A `PixelSet` with a learned step size starting at ``lr_teacher``."""
    if init == "real":
        return PixelSet.from_real(data.train, ipc, generator, lr=cfg.lr_teacher, learn_lr=True)
    return PixelSet.from_noise(data.spec, ipc, generator, lr=cfg.lr_teacher, learn_lr=True)


def check_matching(cfg: Any, ctx: Context) -> None:
    """Trajectory matching's requirements, checked before a run starts (`MethodEntry.check`): a
    student without BatchNorm, and expert trajectories that exist and fit (`open_experts`)."""
    student_model(cfg.model, ctx.spec, torch.device("cpu"))
    open_experts(cfg, ctx)


def open_experts(cfg: Any, ctx: Context):
    """The expert buffer a run matches (``cfg.experts`` or the default folder of the dataset, its
    options, the model and the ZCA setting), checked against them and the epochs it needs."""
    from ..experts import ExpertBuffer, ExpertConfig, ExpertError, default_experts_dir

    spec = ctx.spec
    zca = (spec.extra.get("zca") or {}).get("regularization")
    path = Path(cfg.experts).expanduser() if cfg.experts else default_experts_dir(
        ExpertConfig(dataset=spec.name, model=cfg.model, zca=zca, dataset_options=dict(ctx.dataset_options)))
    if not any(path.glob("expert-*.safetensors")):
        raise ExpertError(
            f"no expert trajectories in {path}; train them with `datadistill experts --dataset {spec.name} "
            f"--model {cfg.model} --experts 10 --epochs {cfg.epochs_needed}" + (f" --zca {zca}" if zca else "")
            + (f" --out {path}`" if cfg.experts else "`") + " (or point method_config.experts at a folder)")
    buf = ExpertBuffer.open(path)
    buf.check_fits(dataset=spec.name, model=cfg.model, zca=zca, need_epochs=cfg.epochs_needed)
    return buf


def experts_meta(experts: Any) -> dict[str, Any]:
    """What the distilled file records about the experts it was matched to."""
    out: dict[str, Any] = {"path": str(getattr(experts, "directory", "")), "n_experts": len(experts)}
    if hasattr(experts, "summary"):
        s = experts.summary()
        out.update({k: s[k] for k in ("config", "epochs", "mean_final_test_acc", "total_seconds") if k in s})
    return out


def draw_window(n_experts: int, max_start_epoch: int, g: torch.Generator) -> tuple[int, int]:
    """A random expert and a start epoch in ``0 .. max_start_epoch - 1``."""
    e = int(torch.randint(n_experts, (1,), generator=g))
    t = int(torch.randint(max_start_epoch, (1,), generator=g))
    return e, t


def guarded_update(name: str, loss: torch.Tensor, iteration: int, optimizers: list[torch.optim.Optimizer],
                   learned: list[torch.Tensor], alpha: torch.Tensor, min_lr: float, max_lr: float) -> float:
    """``loss.backward()`` and a step of every optimizer, with the failure guards of trajectory
    matching: a non-finite loss or gradient raises `DivergenceError` before anything changes; the
    step size ``alpha`` is clamped to ``>= min_lr``; an ``alpha`` at or above ``max_lr`` undoes the
    step (``learned`` tensors, ``alpha`` and the optimizer states) and raises. Returns the new alpha."""
    if not torch.isfinite(loss):
        raise DivergenceError(f"{name}: the loss became {float(loss.detach())} at iteration {iteration + 1} "
                              f"(step size {float(alpha.detach()):.4g}); lower method_config.lr_img or lr_lr")
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    loss.backward()
    if any(t.grad is not None and not bool(torch.isfinite(t.grad).all()) for t in [*learned, alpha]):
        raise DivergenceError(f"{name}: non-finite gradient at iteration {iteration + 1}; lower "
                              "method_config.lr_img or lr_lr")
    before = ([t.detach().clone() for t in [*learned, alpha]], [copy.deepcopy(o.state_dict()) for o in optimizers])
    for opt in optimizers:
        opt.step()
    with torch.no_grad():
        alpha.clamp_(min=min_lr)
    a = float(alpha.detach())
    if not a < max_lr:  # also catches NaN
        with torch.no_grad():  # undo: everything stays in its last good state
            for t, old in zip([*learned, alpha], before[0]):
                t.copy_(old)
        for opt, state in zip(optimizers, before[1]):
            opt.load_state_dict(state)
        raise DivergenceError(f"{name}: the learned step size would reach {a:.4g} (>= max_lr {max_lr}) at "
                              f"iteration {iteration + 1}; lower method_config.lr_lr")
    return a


def next_chunk(chunks: list[torch.Tensor], n: int, size: int, g: torch.Generator,
               device: torch.device) -> torch.Tensor:
    """The next ``size`` indices of ``range(n)`` from ``chunks`` (a fresh permutation, split, whenever
    they are used up; ``chunks`` is the caller's state and is updated in place)."""
    if not chunks:
        chunks.extend(torch.randperm(n, generator=g).split(size))
    return chunks.pop(0).to(device)


def dsa_batch(dsa: DSAConfig | None, x: torch.Tensor, g: torch.Generator, allow_flip: bool) -> torch.Tensor:
    """``x`` through DSA with fresh parameters (identity when ``dsa`` is None)."""
    if dsa is None:
        return x
    p = sample_params(dsa, x.shape[0], g, tuple(x.shape[-2:]), allow_flip=allow_flip)
    return apply(x, p.to(x.device), dsa)


def store_step_size(synset: Any, alpha: torch.Tensor) -> None:
    """Write the learned step size into the set (stored as its log, like `PixelSet`'s)."""
    with torch.no_grad():
        synset.log_lr.copy_(alpha.detach().log())


def student_model(name: str, spec, device: torch.device) -> torch.nn.Module:
    """The student architecture (its parameters come from the experts), BatchNorm refused."""
    net = create_model(name, spec.channels, spec.num_classes, spec.image_size, seed=0).to(device)
    if has_batchnorm(net):
        raise ConfigError(f"trajectory matching does not support BatchNorm models ({name!r}): experts store "
                          "parameters only and unrolled steps would update running statistics in place; use a "
                          "model with instance/group norm or none (e.g. convnet, convnet_nn)")
    return net.train()


class MTT(MethodHooks):
    def __init__(self, cfg: MTTConfig, ctx: Context, experts: Any = None) -> None:
        self.cfg, self.ctx, self.synset = cfg, ctx, ctx.synset
        if self.synset.learned_lr() is None:
            raise ValueError("MTT needs a set with a learned step size (PixelSet(lr=..., learn_lr=True))")
        self.net = student_model(cfg.model, ctx.spec, ctx.device)
        self.buffers = buffers_of(self.net)
        self.experts = experts if experts is not None else open_experts(cfg, ctx)
        self.alpha = torch.tensor(float(self.synset.learned_lr()), device=ctx.device, requires_grad=True)
        self.opt_img = torch.optim.SGD([self.synset.images], lr=cfg.lr_img, momentum=cfg.momentum)
        self.opt_lr = torch.optim.SGD([self.alpha], lr=cfg.lr_lr, momentum=cfg.momentum)
        self.dsa = DSAConfig(strategy=cfg.dsa_strategy, op_choice="per_batch") if cfg.dsa else None
        self._chunks: list[torch.Tensor] = []

    # ------------------------------------------------------------------ pieces
    def _batches(self, g: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``syn_steps`` synthetic mini-batches (differentiable), DSA'd with fresh parameters."""
        n = len(self.synset)
        for _ in range(self.cfg.syn_steps):
            x, y = self.synset(next_chunk(self._chunks, n, self.cfg.batch_syn or n, g, self.synset.images.device))
            yield dsa_batch(self.dsa, x, g, self.ctx.spec.flip), y

    def matching_loss(self, expert: int, start_epoch: int, g: torch.Generator) -> torch.Tensor:
        dev = self.ctx.device
        start = self.experts.params(expert, start_epoch, device=dev)
        target = self.experts.params(expert, start_epoch + self.cfg.expert_epochs, device=dev)
        steps = ((x, y, self.alpha) for x, y in self._batches(g))
        student = unrolled_sgd(self.net, start, steps, buffers=self.buffers, checkpoint=self.cfg.checkpoint)
        return trajectory_loss(student, start, target)

    # ------------------------------------------------------------------ protocol
    def step(self, iteration: int) -> dict[str, float]:
        g = self.ctx.generator
        expert, t = draw_window(len(self.experts), self.cfg.max_start_epoch, g)
        loss = self.matching_loss(expert, t, g)
        a = guarded_update("mtt", loss, iteration, [self.opt_img, self.opt_lr], [self.synset.images], self.alpha,
                           self.cfg.min_lr, self.cfg.max_lr)
        self._store_alpha()
        return {"loss": float(loss.detach()), "lr": a, "start_epoch": float(t)}

    def _store_alpha(self) -> None:
        store_step_size(self.synset, self.alpha)

    def state_dict(self) -> dict[str, Any]:
        return {"opt_img": self.opt_img.state_dict(), "opt_lr": self.opt_lr.state_dict(),
                "alpha": self.alpha.detach().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.opt_img.load_state_dict(state["opt_img"])
        self.opt_lr.load_state_dict(state["opt_lr"])
        with torch.no_grad():
            self.alpha.copy_(state["alpha"])
        self._store_alpha()

    def file_meta(self) -> dict[str, Any]:
        return {"experts": experts_meta(self.experts)}

register_method(MethodEntry(
    name="mtt", config=MTTConfig, build=MTT, iterations=5000, init="real", eval_preset="mtt", synset=mtt_synset,
    check=check_matching,
    description="Matching training trajectories (Cazenavette et al., CVPR 2022); needs `datadistill experts`",
))
