"""Trajectory matching (MTT).

Cazenavette, Wang, Torralba, Efros, Zhu, "Dataset Distillation by Matching Training Trajectories",
CVPR 2022 (arXiv 2203.11932).

Each iteration (the window, the loss and the guarded update are `methods.trajectory`'s):

1. draw an expert and a start epoch ``t``; the student starts from the expert's ``theta*_t``;
2. run ``syn_steps`` differentiable SGD steps on synthetic mini-batches (``batch_syn`` images, a
   fresh permutation whenever the images are used up; all images per step by default), each batch
   through DSA with fresh parameters, with the **learned step size** ``alpha``;
3. minimize ``||theta_student - theta*_{t+M}||^2 / ||theta*_t - theta*_{t+M}||^2``
   (``M = expert_epochs``) with respect to the images and ``alpha``: SGD with momentum 0.5 on both
   (lr ``lr_img`` and ``lr_lr``); ``alpha`` starts at ``lr_teacher``.

Evaluation (the ``mtt`` protocol) trains fresh networks with the learned ``alpha`` as their
learning rate, as MTT does. The set is a `PixelSet` whose ``log_lr`` holds ``alpha``.

Defaults are the reference code's (``syn_steps`` 20, ``expert_epochs`` 3, ``max_start_epoch`` 25,
``lr_img`` 1000, ``lr_lr`` 1e-5, ``lr_teacher`` 0.01, DSA on); the paper's per-setting values are
presets (``--preset mtt-cifar10-ipc1`` ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import torch

from ..synset import PixelSet
from .base import Context, MethodEntry, MethodHooks, config_model, register_method
from .trajectory import Matcher, TrajectoryMatching, check_matching, experts_meta


@dataclass(frozen=True)
class MTTConfig(TrajectoryMatching):
    """`TrajectoryMatching`'s fields (flat in the YAML) plus the momentum of both optimizers."""

    momentum: float = 0.5


def mtt_synset(cfg: MTTConfig, data, ipc: int, init: str, generator: torch.Generator) -> PixelSet:
    """A `PixelSet` with a learned step size starting at ``lr_teacher``."""
    if init == "real":
        return PixelSet.from_real(data.train, ipc, generator, lr=cfg.lr_teacher, learn_lr=True)
    return PixelSet.from_noise(data.spec, ipc, generator, lr=cfg.lr_teacher, learn_lr=True)


class MTT(MethodHooks):
    def __init__(self, cfg: MTTConfig, ctx: Context, experts: Any = None) -> None:
        self.cfg, self.ctx, self.synset = cfg, ctx, ctx.synset
        if self.synset.learned_lr() is None:
            raise ValueError("MTT needs a set with a learned step size (PixelSet(lr=..., learn_lr=True))")
        self.match = Matcher(cfg, ctx, experts)
        self.opt_img = torch.optim.SGD([self.synset.images], lr=cfg.lr_img, momentum=cfg.momentum)
        self.opt_lr = torch.optim.SGD([self.match.alpha], lr=cfg.lr_lr, momentum=cfg.momentum)

    def _steps(self, g: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """``syn_steps`` synthetic mini-batches (differentiable), DSA'd with fresh parameters."""
        n, dev = len(self.synset), self.synset.images.device
        for _ in range(self.cfg.syn_steps):
            x, y = self.synset(self.match.next_chunk(n, g, dev))
            yield self.match.augment(x, g), y, self.match.alpha

    def matching_loss(self, expert: int, start_epoch: int, g: torch.Generator) -> torch.Tensor:
        return self.match.window_loss(expert, start_epoch, self._steps(g))

    def step(self, iteration: int) -> dict[str, float]:
        g = self.ctx.generator
        expert, t = self.match.draw_window(g)
        loss = self.matching_loss(expert, t, g)
        a = self.match.update("mtt", loss, iteration, [self.opt_img, self.opt_lr], [self.synset.images])
        return {"loss": float(loss.detach()), "lr": a, "start_epoch": float(t)}

    def state_dict(self) -> dict[str, Any]:
        return {"opt_img": self.opt_img.state_dict(), "opt_lr": self.opt_lr.state_dict(),
                "alpha": self.match.alpha.detach().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.opt_img.load_state_dict(state["opt_img"])
        self.opt_lr.load_state_dict(state["opt_lr"])
        self.match.load_alpha(state["alpha"])

    def file_meta(self) -> dict[str, Any]:
        return {"experts": experts_meta(self.match.experts)}


register_method(MethodEntry(
    name="mtt", config=MTTConfig, build=MTT, iterations=5000, eval_preset="mtt", synset=mtt_synset,
    check=check_matching,
    network=config_model,
    description="Matching training trajectories (Cazenavette et al., CVPR 2022); needs `datadistill experts`",
))
