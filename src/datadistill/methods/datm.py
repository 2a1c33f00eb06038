"""DATM: difficulty-aligned trajectory matching, MTT with learned soft labels and a growing window.

Guo, Wang, Cazenavette, Li, Zhang, You, "Towards Lossless Dataset Distillation via Difficulty-Aligned
Trajectory Matching", ICLR 2024 (arXiv 2310.05773); reference code NUS-HPC-AI-Lab/DATM
(``distill/DATM.py``, ``utils/cfg.py``, ``configs/``), itself built on MTT's.

DATM is MTT (`methods.trajectory`: an expert, a start epoch ``t``, ``syn_steps`` unrolled SGD steps
with the learned step size ``alpha``, the normalized distance to the expert ``expert_epochs``
later) plus three things, each a field of `DATMConfig` and a few lines below:

1. **Difficulty alignment** (`start_epoch_bound`): ``t`` is drawn in ``min_start_epoch ..
   bound - 1``. With ``sequential`` ("sequential generation") the bound starts at
   ``current_max_start_epoch`` and grows linearly to ``max_start_epoch`` over the first
   ``expansion_end_iteration`` iterations (the reference's ``Upper_Bound``, its
   ``expansion_end_epoch`` counts iterations). Small sets match early (easy) stretches of the
   trajectories, large sets later (hard) ones: the paper's per-IPC presets set the range.
2. **Soft labels from the experts** (`DATM.initial_logits`): the set's labels start as expert
   logits on its initial images, taken at the experts' last stored epoch (``label_epoch`` None;
   the reference's ``Label_Model_Timestamp = -1``). With ``init_correct`` (the reference's
   ``pix_init: samples_predicted_correctly``) the initial images are real images the label
   expert classifies correctly (`DATM.select_correct`), and an image's logits are the mean over
   all experts that classify it correctly; without it, the logits of the one label expert.
3. **Learned labels**: the logits are parameters, stepped with the images by SGD (``lr_y``,
   momentum ``momentum_y``). Each unrolled step trains the student on ``softmax(logits)`` with
   cross-entropy against those probabilities (the reference's ``SoftCrossEntropy``;
   `functional.unroll.sgd_step`'s ``F.cross_entropy`` takes probability targets), so the
   matching loss reaches the logits.

Also from the reference: an update is skipped when the matching loss exceeds ``loss_threshold``
(its ``threshold``; None turns this off). After every update the set's soft labels are written
as ``softmax(logits)`` (`DATM.store_labels`, like `Matcher.store_alpha`), with the set's
``label_loss`` "soft_ce": evaluation (the ``mtt`` protocol, labels "auto") trains on them with the
learned step size, as the reference evaluates with ``SoftCrossEntropy`` and ``syn_lr``.

With ``learn_labels``, ``soft_init``, ``init_correct`` and ``sequential`` off, ``min_start_epoch``
0 and ``loss_threshold`` None, a DATM run is an MTT run: same draws, same set (a test pins this).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch.func import functional_call

from ..config import ConfigError
from ..seeding import make_generator
from .base import Context, MethodEntry, MethodHooks, config_model, register_method
from .mtt import mtt_synset
from .trajectory import Matcher, TrajectoryMatching, check_matching, experts_meta, open_experts


@dataclass(frozen=True)
class DATMConfig(TrajectoryMatching):
    """`TrajectoryMatching`'s fields with the reference's defaults (``utils/cfg.py``: 80 synthetic
    steps, 2 expert epochs, start epochs up to 25, lr images 1000, lr step size 1e-5) plus DATM's."""

    syn_steps: int = 80
    expert_epochs: int = 2
    momentum: float = 0.5  # images and step size, as MTT
    # the window (difficulty alignment)
    min_start_epoch: int = 0
    sequential: bool = True  # grow the upper bound from current_max_start_epoch to max_start_epoch
    current_max_start_epoch: int = 20
    expansion_end_iteration: int = 3000  # the bound reaches max_start_epoch here (reference: expansion_end_epoch)
    # the labels
    soft_init: bool = True  # labels start as expert logits (off: hard labels, as MTT)
    init_correct: bool = True  # start from real images the label expert classifies correctly
    label_expert: int = 0  # the expert that labels (and selects) the initial images
    label_epoch: int | None = None  # its epoch; None: the experts' last stored epoch
    learn_labels: bool = True  # the logits are learned with the images
    lr_y: float = 2.0
    momentum_y: float = 0.9
    loss_threshold: float | None = 1.0  # skip the update when the matching loss is above this; None: never

    def __post_init__(self) -> None:
        super().__post_init__()  # trajectory matching's fields; lr_* >= 0 and momentum* in [0, 1)
        bad = []
        if not 0 <= self.min_start_epoch < self.max_start_epoch:
            bad.append(f"need 0 <= min_start_epoch < max_start_epoch, got {self.min_start_epoch}, "
                       f"{self.max_start_epoch}")
        if self.sequential and not self.min_start_epoch < self.current_max_start_epoch <= self.max_start_epoch:
            bad.append(f"need min_start_epoch < current_max_start_epoch <= max_start_epoch, got "
                       f"{self.min_start_epoch}, {self.current_max_start_epoch}, {self.max_start_epoch} "
                       "(or sequential=false)")
        if self.expansion_end_iteration < 1:
            bad.append(f"expansion_end_iteration must be >= 1, got {self.expansion_end_iteration}")
        if self.learn_labels and not self.soft_init:
            bad.append("learn_labels=true needs soft_init=true (the learned labels are logits that start "
                       "as the experts'); set learn_labels=false for hard labels")
        if self.label_expert < 0:
            bad.append(f"label_expert must be >= 0, got {self.label_expert}")
        if self.label_epoch is not None and self.label_epoch < 0:
            bad.append(f"label_epoch must be >= 0 or null (the last stored epoch), got {self.label_epoch}")
        if self.loss_threshold is not None and not self.loss_threshold > 0:
            bad.append(f"loss_threshold must be > 0 or null (never skip), got {self.loss_threshold}")
        if bad:
            raise ConfigError(f"datm: {'; '.join(bad)}")


def start_epoch_bound(cfg: DATMConfig, iteration: int) -> int:
    """The exclusive upper bound of the start epoch at ``iteration`` (0-based): ``max_start_epoch``,
    or with ``sequential`` the reference's linear growth from ``current_max_start_epoch``."""
    if not cfg.sequential:
        return cfg.max_start_epoch
    grown = cfg.current_max_start_epoch + (cfg.max_start_epoch - cfg.current_max_start_epoch) * iteration \
        // cfg.expansion_end_iteration
    return min(grown, cfg.max_start_epoch)


def datm_synset(cfg: DATMConfig, data, ipc: int, init: str, generator: torch.Generator):
    """MTT's set (`mtt_synset`); ``init_correct`` replaces its images with selected real ones, so it
    needs the real initialization."""
    if init != "real" and cfg.init_correct:
        raise ConfigError(f"datm: init_correct=true starts from real images the expert classifies correctly; "
                          f"image_init {init!r} contradicts it (use image_init=real, or "
                          "method_config.init_correct=false)")
    return mtt_synset(cfg, data, ipc, init, generator)


def check_datm(cfg: DATMConfig, ctx: Context) -> None:
    """Trajectory matching's checks plus a label expert and epoch the experts hold."""
    check_matching(cfg, ctx)
    buf = open_experts(cfg, ctx)
    if cfg.soft_init or cfg.init_correct:
        if cfg.label_expert >= len(buf):
            raise ConfigError(f"datm: label_expert {cfg.label_expert} but {buf.directory} holds {len(buf)} experts; "
                              f"valid: 0..{len(buf) - 1}")
        if cfg.label_epoch is not None and cfg.label_epoch > buf.epochs:
            raise ConfigError(f"datm: label_epoch {cfg.label_epoch} but the experts store epochs 0..{buf.epochs}")


class DATM(MethodHooks):
    def __init__(self, cfg: DATMConfig, ctx: Context, experts: Any = None) -> None:
        self.cfg, self.ctx, self.synset = cfg, ctx, ctx.synset
        if self.synset.learned_lr() is None:
            raise ValueError("DATM needs a set with a learned step size (PixelSet(lr=..., learn_lr=True))")
        self.match = Matcher(cfg, ctx, experts)
        self.label_epoch = self.match.experts.epochs if cfg.label_epoch is None else cfg.label_epoch
        if cfg.init_correct:
            self.select_correct()
        self.logits: torch.Tensor | None = None
        if cfg.soft_init:
            self.logits = self.initial_logits().requires_grad_(cfg.learn_labels)
        self.opt_img = torch.optim.SGD([self.synset.images], lr=cfg.lr_img, momentum=cfg.momentum)
        self.opt_lr = torch.optim.SGD([self.match.alpha], lr=cfg.lr_lr, momentum=cfg.momentum)
        self.opt_y = (torch.optim.SGD([self.logits], lr=cfg.lr_y, momentum=cfg.momentum_y)
                      if cfg.learn_labels else None)
        self.store_labels()

    # ------------------------------------------------------------------ initialization
    @torch.no_grad()
    def expert_logits(self, expert: int, x: torch.Tensor, chunk: int = 256) -> torch.Tensor:
        """The expert's logits at ``label_epoch`` on ``x`` (the student network, in chunks)."""
        params = self.match.experts.params(expert, self.label_epoch, device=self.ctx.device)
        state = {**params, **self.match.buffers}
        return torch.cat([functional_call(self.match.net, state, (xb.to(self.ctx.device),)) for xb in x.split(chunk)])

    @torch.no_grad()
    def select_correct(self) -> None:
        """Per class, the first ``ipc`` real images of a random order that the label expert
        classifies correctly; when it has too few, the next experts classify the rest (the
        reference's ``samples_predicted_correctly``). The order comes from the run's seed alone,
        so the method's own stream of draws is MTT's."""
        real, ipc, n_exp = self.ctx.data.train, self.synset.ipc, len(self.match.experts)
        g = make_generator(self.ctx.seed, "datm-select")
        rows = []
        for c in range(self.synset.num_classes):
            left = real.class_indices(c)[torch.randperm(real.class_count(c), generator=g).to(real.device)]
            chosen: list[torch.Tensor] = []
            for k in range(n_exp):
                expert = (self.cfg.label_expert + k) % n_exp
                keep = torch.ones(len(left), dtype=torch.bool, device=left.device)
                for start in range(0, len(left), 256):
                    idx = left[start:start + 256]
                    hit = self.expert_logits(expert, real.images[idx]).argmax(1).to(left.device) == c
                    chosen.append(idx[hit][: ipc - sum(len(t) for t in chosen)])
                    keep[start:start + 256] = ~hit
                    if sum(len(t) for t in chosen) == ipc:
                        break
                left = left[keep]
                if sum(len(t) for t in chosen) == ipc:
                    break
            got = sum(len(t) for t in chosen)
            if got < ipc:
                raise ValueError(f"datm: the {n_exp} experts at epoch {self.label_epoch} classify only {got} "
                                 f"training images of class {c} correctly, {ipc} needed; lower --ipc or set "
                                 "method_config.init_correct=false")
            rows.append(torch.cat(chosen))
        self.synset.images.copy_(real.images[torch.cat(rows)].to(self.synset.images.device))

    @torch.no_grad()
    def initial_logits(self) -> torch.Tensor:
        """Expert logits on the set's images: with ``init_correct`` the mean over the experts that
        classify each image correctly (the reference averages only those), else the label expert's."""
        x, y = self.synset.images.detach(), self.synset.labels
        if not self.cfg.init_correct:
            return self.expert_logits(self.cfg.label_expert, x).clone()
        logits = torch.stack([self.expert_logits(e, x) for e in range(len(self.match.experts))])  # [E, N, C]
        correct = logits.argmax(2) == y.to(logits.device)
        n = correct.sum(0)
        if not bool((n > 0).all()):
            raise ValueError("datm: no expert classifies some of the initial images correctly; set "
                             "method_config.init_correct=false")
        return (logits * correct.unsqueeze(2)).sum(0) / n.unsqueeze(1)

    # ------------------------------------------------------------------ the loop
    def store_labels(self) -> None:
        """Write ``softmax(logits)`` into the set as its soft labels (nothing with hard labels)."""
        if self.logits is not None:
            self.synset.set_soft_labels(F.softmax(self.logits.detach(), dim=1))

    def _steps(self, g: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """``syn_steps`` mini-batches: images through DSA, targets ``softmax(logits)`` (differentiable
        when learned) or the set's own labels."""
        n, dev = len(self.synset), self.synset.images.device
        for _ in range(self.cfg.syn_steps):
            idx = self.match.next_chunk(n, g, dev)
            x, y = self.synset(idx)
            if self.logits is not None:
                y = F.softmax(self.logits[idx], dim=1)
            yield self.match.augment(x, g), y, self.match.alpha

    def matching_loss(self, expert: int, start_epoch: int, g: torch.Generator) -> torch.Tensor:
        return self.match.window_loss(expert, start_epoch, self._steps(g))

    def step(self, iteration: int) -> dict[str, float]:
        g, cfg = self.ctx.generator, self.cfg
        bound = start_epoch_bound(cfg, iteration)
        expert, t = self.match.draw_window(g, cfg.min_start_epoch, bound)
        loss = self.matching_loss(expert, t, g)
        out = {"loss": float(loss.detach()), "start_epoch": float(t), "start_epoch_bound": float(bound)}
        if cfg.loss_threshold is not None and bool(torch.isfinite(loss)) and out["loss"] > cfg.loss_threshold:
            return {**out, "lr": float(self.match.alpha.detach()), "skipped": 1.0}
        optimizers, learned = [self.opt_img, self.opt_lr], [self.synset.images]
        if self.opt_y is not None:
            optimizers.append(self.opt_y)
            learned.append(self.logits)
        a = self.match.update("datm", loss, iteration, optimizers, learned)
        self.store_labels()
        return {**out, "lr": a, "skipped": 0.0}

    def state_dict(self) -> dict[str, Any]:
        state = {"opt_img": self.opt_img.state_dict(), "opt_lr": self.opt_lr.state_dict(),
                 "alpha": self.match.alpha.detach().clone()}
        if self.logits is not None:
            state["logits"] = self.logits.detach().clone()
        if self.opt_y is not None:
            state["opt_y"] = self.opt_y.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.opt_img.load_state_dict(state["opt_img"])
        self.opt_lr.load_state_dict(state["opt_lr"])
        self.match.load_alpha(state["alpha"])
        if self.logits is not None:
            with torch.no_grad():
                self.logits.copy_(state["logits"])
        if self.opt_y is not None:
            self.opt_y.load_state_dict(state["opt_y"])
        self.store_labels()

    def file_meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"experts": experts_meta(self.match.experts)}
        if self.cfg.soft_init or self.cfg.init_correct:
            meta["label_expert"] = {"expert": self.cfg.label_expert, "epoch": self.label_epoch}
        return meta


register_method(MethodEntry(
    name="datm", config=DATMConfig, build=DATM, iterations=5000, eval_preset="mtt", synset=datm_synset,
    check=check_datm,
    network=config_model,
    description="Difficulty-aligned trajectory matching with learned soft labels (Guo et al., ICLR 2024); "
                "needs `datadistill experts`",
))
