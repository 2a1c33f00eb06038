"""Neural Feature Regression with Pooling (FRePo).

Zhou, Nezhadarya, Ba, "Dataset Distillation using Neural Feature Regression", NeurIPS 2022
(arXiv 2206.00719). Defaults are the reference code's (github.com/yongchaoz/FRePo, JAX).

Only the last layer of a network is trained to convergence on the set ``S = (X_s, Y_s)``; with
the feature extractor ``f_theta`` fixed that is kernel ridge regression on the features (the
paper's Eq. 3-4), so the meta-gradient runs through one kernel solve instead of an unrolled loop:

    K_ss = f(X_s) f(X_s)^T,  K_ts = f(X_t) f(X_s)^T
    Y_t_hat = K_ts (K_ss + lambda tr(K_ss)/|S| I)^-1 Y_s             (`functional.feature_krr`)
    L = 1/|B| sum_(t in B) 1/2 ||Y_t_hat - y_t||^2  +  L_margin(Y_s)  (the reference's loss)

where ``B`` is a uniform batch of real images with centered one-hot targets ``y_t = e_c - 1/C``,
and ``L_margin`` (the reference code's, not in the paper's text) is the mean over the set of
``-min(top1(y_s) - top2(y_s), 1/C)``: it keeps each learned label's winning margin at >= 1/C.

The networks ``theta`` come from a **pool** of ``num_models`` networks trained online on the set
itself (Algorithm 1): each iteration draws one, takes the meta-step above with it, then trains
it one Adam step (lr 3e-4, the same squared loss) on up to ``online_batch`` examples of the set
with its current labels; a network that has taken more than ``max_online_updates`` steps is
replaced by a fresh one. Their step counters start staggered (``i * max_online_updates //
num_models``), so the pool always holds networks at every stage of training.

Images and labels are learned jointly with LAMB (lr 3e-4, cosine decay to 0.1x over the run's
iterations). Labels start at the centered one-hot ``e_c - 1/C``, scaled by ``1/sqrt(C/10)``. On
datasets that allow horizontal flips the support set is the images plus their flips (same labels).

The pool's networks are the reference's ``Conv`` (`convnet_frepo_prenorm`: conv, ReLU, average
pooling per block, widths 128/256/512, BatchNorm on the inputs of blocks 2 and 3), initialized as
flax does (``weight_init="lecun"``). BatchNorm: features are taken in eval mode with the network's
running statistics (per-example, so ``K_ss`` is a proper Gram matrix), and online training in train
mode updates them. The running statistics follow the batch closely (PyTorch momentum 0.9, the
reference's flax 0.1).

The learned labels are real-valued regression targets: they are the set's soft labels, trained on
with the reference's squared loss ``1/2 sum_c (z_c - y_c)^2`` (``label_loss="sse_half"``; sets
saved before this setting existed say ``mse``, the mean over classes, and keep that meaning).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError
from ..functional import feature_krr
from ..functional.labels import LABEL_LOSSES, sse_half
from ..models import WEIGHT_INITS, create_model
from ..synset import PixelSet
from .base import Context, DivergenceError, MethodEntry, MethodHooks, check_ranges, config_model, register_method

OPTIMIZERS = ("lamb", "adam")


@dataclass(frozen=True)
class FRePoConfig:
    lr: float = 3e-4  # images and labels (the reference's "kernel" optimizer)
    optimizer: str = "lamb"  # "lamb" (reference) or "adam"
    lr_final: float = 0.1  # cosine decay of lr to lr * lr_final over the run's iterations
    batch_real: int = 1024  # real images per meta-step, drawn uniformly (not per class)
    reg: float = 1e-6  # ridge lambda, times tr(K_ss) / |S|
    learn_labels: bool = True
    label_margin: float = 1.0  # weight of the margin term on the learned labels (0: off)
    model: str = "convnet_frepo_prenorm"  # the pool's networks (the reference's Conv)
    weight_init: str = "lecun"  # their initialization (models.WEIGHT_INITS; the reference's flax default)
    num_models: int = 10  # pool size
    max_online_updates: int = 100  # online steps before a network is replaced
    lr_online: float = 3e-4  # Adam on the pool's networks
    online_batch: int = 1000  # set examples per online step (all of them when fewer)
    flip: bool = True  # add horizontally flipped images to the support set (where the dataset allows flips)
    bn_momentum: float = 0.9  # PyTorch convention: weight of the new batch in BatchNorm's running statistics
    label_loss: str = "sse_half"  # how the set's learned labels are trained on (functional.labels), saved in the file

    def __post_init__(self) -> None:
        check_ranges("frepo", self, positive=("batch_real", "num_models", "max_online_updates", "online_batch"),
                     rates=("lr", "lr_online", "reg", "label_margin"), momenta=("bn_momentum",))
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"frepo: optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if not 0 <= self.lr_final <= 1:
            raise ConfigError(f"frepo: lr_final must be in [0, 1], got {self.lr_final!r}")
        WEIGHT_INITS.get(self.weight_init)  # unknown names list the valid ones
        LABEL_LOSSES.get(self.label_loss)


class Lamb(torch.optim.Optimizer):
    """LAMB (You et al. 2020) as optax's ``lamb`` with no weight decay: an Adam step rescaled per
    tensor by the trust ratio ``||p|| / ||update||`` (1 when either norm is 0)."""

    def __init__(self, params: Any, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["step"], st["m"], st["v"] = 0, torch.zeros_like(p), torch.zeros_like(p)
                st["step"] += 1
                st["m"].mul_(b1).add_(p.grad, alpha=1 - b1)
                st["v"].mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                m_hat = st["m"] / (1 - b1 ** st["step"])
                v_hat = st["v"] / (1 - b2 ** st["step"])
                update = m_hat / (v_hat.sqrt() + group["eps"])
                pn, un = p.norm(), update.norm()
                trust = pn / un if float(pn) > 0 and float(un) > 0 else 1.0
                p.sub_(group["lr"] * trust * update)


def centered_one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``e_c - 1/C``: the regression targets of the real data."""
    return F.one_hot(labels.long(), num_classes).float() - 1.0 / num_classes


def initial_labels(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The learned labels' start: centered one-hot, divided by ``sqrt(C / 10)`` (the reference's scale)."""
    return centered_one_hot(labels, num_classes) / math.sqrt(num_classes / 10)


def margin_loss(y: torch.Tensor) -> torch.Tensor:
    """Mean of ``-min(top1 - top2, 1/C)`` over the rows of ``y``."""
    top = y.topk(2, dim=1).values
    return -(top[:, 0] - top[:, 1]).clamp(max=1.0 / y.shape[1]).mean()


def half_squared_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1/2 ||pred - target||^2`` per row, averaged over rows (the reference's regression loss)."""
    return sse_half(pred, target).mean()


def frepo_synset(cfg: FRePoConfig, data: Any, ipc: int, init: str, generator: torch.Generator) -> PixelSet:
    """A `PixelSet` whose soft labels start at `initial_labels`, trained on with ``cfg.label_loss``."""
    s = (PixelSet.from_real(data.train, ipc, generator) if init == "real"
         else PixelSet.from_noise(data.spec, ipc, generator))
    y0 = initial_labels(s.labels, s.num_classes)
    return PixelSet(s.images.detach(), s.labels, s.num_classes, soft_labels=y0, label_loss=cfg.label_loss)


class FRePo(MethodHooks):
    def __init__(self, cfg: FRePoConfig, ctx: Context) -> None:
        self.cfg, self.ctx, self.synset = cfg, ctx, ctx.synset
        spec, s = ctx.spec, ctx.synset
        self.C = spec.num_classes
        soft = s.label_vectors()
        y0 = soft if soft is not None else initial_labels(s.labels, self.C)
        self.labels = nn.Parameter(y0.detach().clone().float().to(s.images.device), requires_grad=cfg.learn_labels)
        params = [s.images] + ([self.labels] if cfg.learn_labels else [])
        self.opt = (Lamb(params, lr=cfg.lr) if cfg.optimizer == "lamb" else
                    torch.optim.Adam(params, lr=cfg.lr, eps=1e-8))
        self.flip = cfg.flip and spec.allow_flip
        self.pool = [self._fresh_model() for _ in range(cfg.num_models)]
        self.pool_opt = [self._online_opt(net) for net in self.pool]
        self.pool_steps = [i * (cfg.max_online_updates // cfg.num_models) for i in range(cfg.num_models)]

    # ------------------------------------------------------------------ the pool
    def _fresh_model(self) -> nn.Module:
        spec, g = self.ctx.spec, self.ctx.generator
        net = create_model(self.cfg.model, spec.channels, self.C, spec.image_size,
                           seed=int(torch.randint(0, 2**62, (1,), generator=g)),
                           weight_init=self.cfg.weight_init).to(self.ctx.device)
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = self.cfg.bn_momentum
        return net

    def _online_opt(self, net: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.Adam(net.parameters(), lr=self.cfg.lr_online, eps=1e-8)

    def _online_step(self, k: int, g: torch.Generator) -> float | None:
        """Train pool network ``k`` one step on the set (or replace it when it has trained enough)."""
        if self.pool_steps[k] > self.cfg.max_online_updates:
            self.pool[k] = self._fresh_model()
            self.pool_opt[k] = self._online_opt(self.pool[k])
            self.pool_steps[k] = 0
            return None
        n = len(self.synset)
        idx = torch.randperm(n, generator=g)[: self.cfg.online_batch] if n > self.cfg.online_batch else torch.arange(n)
        idx = idx.to(self.synset.images.device)
        x, y = self.synset.images.detach()[idx], self.labels.detach()[idx]
        net = self.pool[k].train()
        loss = half_squared_error(net(x), y)
        self.pool_opt[k].zero_grad(set_to_none=True)
        loss.backward()
        self.pool_opt[k].step()
        self.pool_steps[k] += 1
        return float(loss.detach())

    # ------------------------------------------------------------------ one iteration
    def lr_at(self, iteration: int) -> float:
        """Cosine decay from ``lr`` to ``lr * lr_final`` over the run's iterations (constant when unknown)."""
        total = self.ctx.iterations
        if total <= 0:
            return self.cfg.lr
        t = min(iteration, total) / total
        return self.cfg.lr * (self.cfg.lr_final + (1 - self.cfg.lr_final) * 0.5 * (1 + math.cos(math.pi * t)))

    def meta_loss(self, net: nn.Module, g: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        cfg, ctx, train = self.cfg, self.ctx, self.ctx.data.train
        idx = torch.randperm(len(train), generator=g)[: cfg.batch_real]
        x_t = train.images[idx].to(ctx.device)
        y_t = centered_one_hot(train.labels[idx], self.C).to(ctx.device)
        net.eval().requires_grad_(False)
        try:
            with torch.no_grad():
                f_t = net.forward_features(x_t)
            x_s, y_s = self.synset.images, self.labels
            if self.flip:
                x_s, y_s = torch.cat([x_s, x_s.flip(-1)]), torch.cat([y_s, y_s])
            pred = feature_krr(f_t, net.forward_features(x_s), y_s, cfg.reg)
        finally:
            net.requires_grad_(True)
        kernel = half_squared_error(pred, y_t)
        margin = margin_loss(self.labels) if cfg.learn_labels and cfg.label_margin > 0 else kernel.new_zeros(())
        acc = float((pred.argmax(1) == y_t.argmax(1)).float().mean())
        return kernel + cfg.label_margin * margin, {"kernel_loss": float(kernel.detach()),
                                                     "label_loss": float(margin.detach()), "krr_acc": acc}

    def step(self, iteration: int) -> dict[str, float]:
        g = self.ctx.generator
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(iteration)
        k = int(torch.randint(0, self.cfg.num_models, (1,), generator=g))
        loss, metrics = self.meta_loss(self.pool[k], g)
        if not torch.isfinite(loss):
            raise DivergenceError(f"frepo: non-finite loss at iteration {iteration} (try a smaller lr or a larger reg)")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self._publish_labels()
        online = self._online_step(k, g)
        return {"loss": float(loss.detach()), **metrics, "lr": self.opt.param_groups[0]["lr"],
                **({"online_loss": online} if online is not None else {})}

    def _publish_labels(self) -> None:
        """Write the learned labels into the set's soft labels (what evaluation and the file see)."""
        self.synset.set_soft_labels(self.labels.detach().clone())

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        return {"opt": self.opt.state_dict(), "labels": self.labels.detach().clone(),
                "pool": [net.state_dict() for net in self.pool], "pool_opt": [o.state_dict() for o in self.pool_opt],
                "pool_steps": list(self.pool_steps)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.labels.copy_(state["labels"])
        self.opt.load_state_dict(state["opt"])
        for net, sd in zip(self.pool, state["pool"]):
            net.load_state_dict(sd)
        self.pool_opt = [self._online_opt(net) for net in self.pool]
        for opt, sd in zip(self.pool_opt, state["pool_opt"]):
            opt.load_state_dict(sd)
        self.pool_steps = list(state["pool_steps"])
        self._publish_labels()


register_method(MethodEntry(
    name="frepo", config=FRePoConfig, build=FRePo, iterations=500000, eval_preset="dsa", synset=frepo_synset,
    network=config_model,
    description="Neural feature regression with a model pool, learned labels (Zhou et al., NeurIPS 2022)",
))
