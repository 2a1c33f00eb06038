"""Trajectory matching, shared by MTT (`methods.mtt`) and HaBa (`methods.haba`).

Cazenavette, Wang, Torralba, Efros, Zhu, "Dataset Distillation by Matching Training Trajectories",
CVPR 2022 (arXiv 2203.11932). Experts trained on the real data stored their parameters after every
epoch (`datadistill.experts`). One matching window:

1. draw an expert and a start epoch ``t`` uniformly in ``0 .. max_start_epoch - 1`` (as the reference
   draws it); the student starts from the expert's ``theta*_t``;
2. the caller's method takes ``syn_steps`` differentiable SGD steps on synthetic mini-batches with
   the **learned step size** ``alpha`` (`functional.unroll.unrolled_sgd`, through
   ``torch.func.functional_call``; ``grad_checkpoint=True`` recomputes each step in the backward
   pass instead of keeping its activations);
3. the loss is ``||theta_student - theta*_{t+M}||^2 / ||theta*_t - theta*_{t+M}||^2``
   (``M = expert_epochs``, `functional.trajectory.trajectory_loss`).

What the two methods differ in, they own: which images a step sees (MTT: pixels; HaBa: bases through
a hallucinator) and what else they learn (HaBa's extractor). What they share lives here:

- `TrajectoryMatching`, the config fields of trajectory matching, with their checks and
  `TrajectoryMatching.epochs_needed`;
- `Matcher`, the state a method composes: the student network, the experts, ``alpha``, DSA and the
  cursor over the synthetic batches, with `Matcher.window_loss` and `Matcher.update` (the guarded
  update: a non-finite loss or gradient, or an ``alpha`` at or above ``max_lr``, raises
  `DivergenceError` *before* anything changes; ``alpha`` is clamped to ``>= min_lr``);
- `check_matching` (a method's up-front check: a student without BatchNorm and experts that fit).

**How the configs compose, and why the YAML stays flat.** ``MTTConfig`` and ``HaBaConfig`` extend
`TrajectoryMatching` with their own fields (a frozen dataclass of fields and their checks, no
behaviour beyond `epochs_needed`). So the shared fields are declared once, a function typed
``TrajectoryMatching`` takes either config, and a method config stays one flat mapping: presets,
``method_config.syn_steps=30`` overrides, ``config.from_dict`` and the ``config.yaml`` / file
metadata written with ``dataclasses.asdict`` keep exactly today's keys. A nested field
(``method_config.matching.syn_steps``) would have changed every saved config and override. A method
gives a shared field its own default by re-declaring it (HaBa: ``lr_img``, ``min_lr``).

Renamed keys: ``checkpoint`` is ``grad_checkpoint`` (``checkpoint`` also names the run's checkpoints);
the old key still loads, with a one-line `DeprecatedKeyWarning`.

BatchNorm students are refused: the experts store parameters only, and an unrolled BatchNorm would
update running statistics in place.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterable

import torch

from ..augment import DSAConfig, apply, parse_strategy, sample_params
from ..config import ConfigError
from ..functional.trajectory import trajectory_loss
from ..functional.unroll import buffers_of, unrolled_sgd
from ..models import create_model, has_batchnorm
from .base import Context, DivergenceError


@dataclass(frozen=True)
class TrajectoryMatching:
    """The fields of trajectory matching (the reference code's defaults); MTT and HaBa extend them."""

    RENAMED: ClassVar[dict[str, str]] = {"checkpoint": "grad_checkpoint"}

    experts: str | None = None  # expert folder; None: the default folder of (dataset, model, zca)
    model: str = "convnet"  # the student (and the experts') architecture
    syn_steps: int = 20  # unrolled SGD steps per window
    expert_epochs: int = 3  # M: the window spans the expert's epochs t .. t + M
    max_start_epoch: int = 25  # t is drawn in 0 .. max_start_epoch - 1
    lr_img: float = 1000.0  # the set's images (MTT: pixels; HaBa: bases)
    lr_lr: float = 1e-05  # the learned step size alpha
    lr_teacher: float = 0.01  # alpha's initial value
    batch_syn: int | None = None  # synthetic examples per unrolled step; None: all of them
    dsa: bool = True
    dsa_strategy: str = "color_crop_cutout_flip_scale_rotate"
    grad_checkpoint: bool = False  # recompute each unrolled step in the backward pass (memory for time)
    min_lr: float = 1e-6  # alpha is clamped to at least this after every update
    max_lr: float = 1.0  # alpha at or above this stops the run (DivergenceError)

    def __post_init__(self) -> None:
        for name in ("syn_steps", "expert_epochs", "max_start_epoch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_syn is not None and self.batch_syn < 1:
            raise ValueError(f"batch_syn must be >= 1 or null, got {self.batch_syn}")
        if not 0 < self.min_lr <= self.lr_teacher < self.max_lr:
            raise ValueError(f"need 0 < min_lr <= lr_teacher < max_lr, got {self.min_lr}, {self.lr_teacher}, "
                             f"{self.max_lr}")
        for f in dataclasses.fields(self):  # every optimizer's settings, the extending config's too
            v = getattr(self, f.name)
            if f.name.startswith("lr_") and v is not None and not v >= 0:
                raise ValueError(f"{f.name} must be >= 0, got {v}")
            if f.name.startswith("momentum") and not 0 <= v < 1:
                raise ValueError(f"{f.name} must be in [0, 1), got {v}")
        if self.dsa:
            parse_strategy(self.dsa_strategy)  # unknown ops list the valid ones

    @property
    def epochs_needed(self) -> int:
        """Epochs an expert must have stored: the latest start plus the matched span."""
        return self.max_start_epoch - 1 + self.expert_epochs


# ---------------------------------------------------------------------- checks before a run
def check_matching(cfg: TrajectoryMatching, ctx: Context) -> None:
    """Trajectory matching's requirements, checked before a run starts (`MethodEntry.check`): a
    student without BatchNorm, and expert trajectories that exist and fit (`open_experts`)."""
    student_model(cfg.model, ctx.spec, torch.device("cpu"))
    open_experts(cfg, ctx)


def student_model(name: str, spec, device: torch.device) -> torch.nn.Module:
    """The student architecture (its parameters come from the experts), BatchNorm refused."""
    net = create_model(name, spec.channels, spec.num_classes, spec.image_size, seed=0).to(device)
    if has_batchnorm(net):
        raise ConfigError(f"trajectory matching does not support BatchNorm models ({name!r}): experts store "
                          "parameters only and unrolled steps would update running statistics in place; use a "
                          "model with instance/group norm or none (e.g. convnet, convnet_nn)")
    return net.train()


def open_experts(cfg: TrajectoryMatching, ctx: Context):
    """The expert buffer a run matches (``cfg.experts`` or the default folder of the dataset, its
    options, the model and the ZCA setting), checked against them and the epochs it needs."""
    from ..experts import ExpertBuffer, ExpertConfig, ExpertError, default_experts_dir

    spec = ctx.spec
    zca = spec.ref.zca
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


# ---------------------------------------------------------------------- the shared state
class Matcher:
    """What a trajectory-matching method composes: the student, the experts, the learned step size
    ``alpha`` (a leaf tensor the method's optimizer steps), DSA and the cursor over its examples."""

    def __init__(self, cfg: TrajectoryMatching, ctx: Context, experts: Any = None) -> None:
        self.cfg, self.ctx = cfg, ctx
        self.net = student_model(cfg.model, ctx.spec, ctx.device)
        self.buffers = buffers_of(self.net)
        self.experts = experts if experts is not None else open_experts(cfg, ctx)
        self.alpha = torch.tensor(float(ctx.synset.learned_lr()), device=ctx.device, requires_grad=True)
        self.dsa = DSAConfig(strategy=cfg.dsa_strategy, op_choice="per_batch") if cfg.dsa else None
        self.chunks: list[torch.Tensor] = []  # what is left of the current permutation of the examples

    def draw_window(self, g: torch.Generator, low: int = 0, high: int | None = None) -> tuple[int, int]:
        """A random expert and a start epoch in ``low .. high - 1`` (default ``0 .. max_start_epoch - 1``;
        DATM narrows it). The draw is ``low + randint(high - low)``, so the default range consumes the
        generator exactly as before and MTT's and HaBa's draws are unchanged."""
        high = self.cfg.max_start_epoch if high is None else high
        if not 0 <= low < high:
            raise ValueError(f"start epoch range {low} .. {high - 1} is empty")
        e = int(torch.randint(len(self.experts), (1,), generator=g))
        t = low + int(torch.randint(high - low, (1,), generator=g))
        return e, t

    def next_chunk(self, n: int, g: torch.Generator, device: torch.device) -> torch.Tensor:
        """The next ``batch_syn`` (default: all ``n``) indices of ``range(n)``: a fresh permutation,
        split, whenever the previous one is used up."""
        if not self.chunks:
            self.chunks.extend(torch.randperm(n, generator=g).split(self.cfg.batch_syn or n))
        return self.chunks.pop(0).to(device)

    def augment(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """``x`` through DSA with fresh parameters (identity without DSA)."""
        if self.dsa is None:
            return x
        p = sample_params(self.dsa, x.shape[0], g, tuple(x.shape[-2:]), allow_flip=self.ctx.spec.allow_flip)
        return apply(x, p.to(x.device), self.dsa)

    def window_loss(self, expert: int, start_epoch: int,
                    steps: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """The student from the expert's ``start_epoch`` through ``steps`` ``(x, y, alpha)``, against
        the expert ``expert_epochs`` later (the normalized distance)."""
        dev = self.ctx.device
        start = self.experts.params(expert, start_epoch, device=dev)
        target = self.experts.params(expert, start_epoch + self.cfg.expert_epochs, device=dev)
        student = unrolled_sgd(self.net, start, steps, buffers=self.buffers, grad_checkpoint=self.cfg.grad_checkpoint)
        return trajectory_loss(student, start, target)

    def update(self, name: str, loss: torch.Tensor, iteration: int, optimizers: list[torch.optim.Optimizer],
               learned: list[torch.Tensor]) -> float:
        """``loss.backward()`` and a step of every optimizer, guarded (see the module doc); the new
        ``alpha`` is written into the set. Returns it."""
        a = guarded_update(name, loss, iteration, optimizers, learned, self.alpha, self.cfg.min_lr, self.cfg.max_lr)
        self.store_alpha()
        return a

    def store_alpha(self) -> None:
        """Write ``alpha`` into the set (stored as its log, like `PixelSet`'s step size)."""
        with torch.no_grad():
            self.ctx.synset.log_lr.copy_(self.alpha.detach().log())

    def load_alpha(self, value: torch.Tensor) -> None:
        with torch.no_grad():
            self.alpha.copy_(value)
        self.store_alpha()


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
