"""Dataset Condensation with gradient matching (DC) and its siamese augmentation (DSA).

Zhao, Mopuri, Bilen, "Dataset Condensation with Gradient Matching", ICLR 2021 (arXiv 2006.05929);
Zhao & Bilen, "Dataset Condensation with Differentiable Siamese Augmentation", ICML 2021.

Each iteration starts a freshly initialized network theta and alternates ``outer_loop`` times:

(a) for every class c, the gradient of the classification loss on a real batch of c and on the
    synthetic images of c are matched, ``D(grad L(A_w(S_c)), grad L(A_w(T_c)))``, and the images
    take one SGD step on ``sum_c D`` (lr 0.1, momentum 0.5); ``A_w`` is DSA with parameters
    shared by the real and synthetic batch of a class (identity for DC);
(b) the network trains ``inner_loop`` epochs on the (detached) synthetic set (SGD lr 0.01, DSA with
    fresh parameters when enabled); skipped after the last matching step.

Per-class gradients (``class_grads``): ``vmap`` computes those of all classes in one
``torch.func.vmap(grad(loss))`` call over the class axis, for the real batch (no graph) and the
synthetic batch (with the graph back to the images); ``loop`` calls ``autograd.grad`` class by
class. Both give the same numbers (tested). On the CPU the loop is faster (per-class weight
gradients under vmap become grouped convolutions, which the CPU kernels run slowly), and each class's
batch goes through in chunks of a few images whose gradients add up to the batch's
(`functional.chunked`: the activations stay in cache and reuse memory); so ``auto`` picks ``loop``
on the CPU and ``vmap`` on CUDA, where it saves kernel launches. Timings: `benchmarks/speed_dc.py`.
The network lives as a parameter dictionary and is trained functionally, so nothing is modified
in place.

BatchNorm models: before each matching step, the running statistics are reset and set to the
exact statistics of a real batch of all classes (16 images per class, as the reference), then the
network is matched in eval mode, i.e. with those statistics: the paper's "statistics from real
data of all classes", without the reference's momentum-0.1 mix with stale statistics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from ..augment import DSAConfig, apply, sample_params
from ..config import ConfigError
from ..functional.chunked import mean_ce_grads, pick_chunk
from ..functional.gradmatch import METRICS, gradient_distance
from ..models import create_model, has_batchnorm
from .base import (Context, DivergenceError, MethodEntry, MethodHooks, check_ranges, class_batches, config_model,
                   register_method)

# the papers' (outer_loop, inner_loop) per images per class
LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}


def default_loops(ipc: int) -> tuple[int, int]:
    """The papers' table; other sizes take the entry of the nearest tabulated size below (the
    reference code refuses them)."""
    return LOOPS[max(k for k in LOOPS if k <= ipc)]


@dataclass(frozen=True)
class DCConfig:
    model: str = "convnet"
    outer_loop: int | None = None  # None: the papers' value for the images per class
    inner_loop: int | None = None
    lr_img: float = 0.1
    momentum: float = 0.5
    lr_net: float = 0.01
    batch_real: int = 256
    batch_train: int = 256  # synthetic mini-batch of the inner network training
    metric: str = "ours"  # "ours" (layer-wise 1 - cos per output unit), "mse", "cos"
    dsa: bool = False
    dsa_strategy: str = "color_crop_cutout_flip_scale_rotate"
    bn_real_per_class: int = 16  # BatchNorm models: real images per class for the statistics
    class_grads: str = "auto"  # per-class gradients: "vmap", "loop", or "auto" (loop on CPU, vmap on CUDA)

    def __post_init__(self) -> None:
        if self.class_grads not in ("auto", "vmap", "loop"):
            raise ConfigError(f"dc: unknown class_grads {self.class_grads!r}; valid: auto, vmap, loop")
        if self.metric not in METRICS:
            raise ConfigError(f"dc: unknown metric {self.metric!r}; valid: {', '.join(METRICS)}")
        for name in ("outer_loop", "inner_loop"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ConfigError(f"dc: {name} must be >= 1, got {v}")
        check_ranges("dc", self, dsa_strategy=self.dsa_strategy if self.dsa else None,
                     positive=("batch_real", "batch_train", "bn_real_per_class"),
                     rates=("lr_img", "lr_net"), momenta=("momentum",))


@dataclass(frozen=True)
class DSAMethodConfig(DCConfig):
    dsa: bool = True


class DC(MethodHooks):
    def __init__(self, cfg: DCConfig, ctx: Context) -> None:
        self.cfg, self.ctx, self.synset = cfg, ctx, ctx.synset
        outer, inner = default_loops(ctx.ipc)
        self.outer = cfg.outer_loop or outer
        self.inner = cfg.inner_loop or inner
        self.opt = torch.optim.SGD([self.synset.images], lr=cfg.lr_img, momentum=cfg.momentum)
        self.dsa = DSAConfig(strategy=cfg.dsa_strategy) if cfg.dsa else None
        self.train_dsa = DSAConfig(strategy=cfg.dsa_strategy, op_choice="per_batch") if cfg.dsa else None
        counts = [ctx.data.train.class_count(c) for c in range(ctx.spec.num_classes)]
        self.n_real = min(cfg.batch_real, min(counts))
        self.n_bn = min(cfg.bn_real_per_class, min(counts))
        spec = ctx.spec
        self.net = create_model(cfg.model, spec.channels, spec.num_classes, spec.image_size, seed=0).to(ctx.device)
        self.bn = has_batchnorm(self.net)
        for m in self.net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = None  # cumulative average: one forward after a reset = that batch's stats
        mode = cfg.class_grads
        self.vmap = mode == "vmap" or (mode == "auto" and ctx.device.type == "cuda")

    # ------------------------------------------------------------------ pieces
    def _fresh(self, g: torch.Generator) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        s = self.ctx.spec
        net = create_model(self.cfg.model, s.channels, s.num_classes, s.image_size,
                           seed=int(torch.randint(0, 2**62, (1,), generator=g))).to(self.ctx.device)
        return ({k: v.detach() for k, v in net.named_parameters()},
                {k: v.detach().clone() for k, v in net.named_buffers()})

    def _loss(self, params: dict, buffers: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(self.net, (params, buffers), (x,)), y)

    def _bn_statistics(self, params: dict, buffers: dict, g: torch.Generator) -> None:
        """Running statistics := the statistics of a real batch of all classes (BatchNorm only)."""
        x, _ = self.ctx.data.train.sample_classes(self.n_bn, g)
        for k in buffers:
            if k.endswith("running_mean"):
                buffers[k].zero_()
            elif k.endswith("running_var"):
                buffers[k].fill_(1.0)
            elif k.endswith("num_batches_tracked"):
                buffers[k].zero_()
        self.net.train()
        with torch.no_grad():
            functional_call(self.net, (params, buffers), (x.to(self.ctx.device),))

    def class_gradients(self, params: dict, buffers: dict, x: torch.Tensor, y: torch.Tensor,
                        create_graph: bool = False) -> dict:
        """Per-class gradients ``{name: [C, *shape]}`` of the loss on ``x [C, n, ...]``; differentiable
        in ``x`` when ``create_graph``."""
        if self.vmap:
            out = vmap(grad(self._loss), in_dims=(None, None, 0, 0))(params, buffers, x, y)
            return out if create_graph else {k: v.detach() for k, v in out.items()}
        p = {k: v.detach().requires_grad_() for k, v in params.items()}
        chunk = self._chunk()
        per_class = [mean_ce_grads(lambda xb: functional_call(self.net, (p, buffers), (xb,)), list(p.values()), x[c],
                                   y[c], chunk, create_graph=create_graph)
                     for c in range(x.shape[0])]
        return {k: torch.stack([g[i] for g in per_class]) for i, k in enumerate(p)}

    def _chunk(self) -> int | None:
        """Chunked forward/backward (`functional.chunked`) unless BatchNorm in training mode ties the
        samples of a batch together."""
        return pick_chunk(self.ctx.device, independent=not (self.bn and self.net.training))

    def match_loss(self, params: dict, buffers: dict, g: torch.Generator) -> torch.Tensor:
        ctx, spec = self.ctx, self.ctx.spec
        C, ipc = spec.num_classes, self.synset.ipc
        real, syn = class_batches(ctx, self.n_real, self.dsa, g)
        y = torch.arange(C, device=ctx.device)
        g_real = self.class_gradients(params, buffers, real.view(C, self.n_real, *real.shape[1:]),
                                      y[:, None].expand(C, self.n_real))
        g_syn = self.class_gradients(params, buffers, syn.view(C, ipc, *syn.shape[1:]), y[:, None].expand(C, ipc),
                                     create_graph=True)
        names = list(params)
        return gradient_distance([g_real[n] for n in names], [g_syn[n] for n in names], self.cfg.metric)

    def train_network(self, params: dict, buffers: dict, g: torch.Generator) -> dict:
        """``inner_loop`` epochs of SGD on the detached synthetic set, functionally."""
        x_all, y_all = self.synset.images.detach(), self.synset.labels
        self.net.train()
        params = {k: v.detach().requires_grad_() for k, v in params.items()}
        chunk = self._chunk()
        for _ in range(self.inner):
            perm = torch.randperm(len(y_all), generator=g).to(y_all.device)
            for i in range(0, len(perm), self.cfg.batch_train):
                idx = perm[i : i + self.cfg.batch_train]
                x = x_all[idx]
                if self.train_dsa is not None:
                    p = sample_params(self.train_dsa, x.shape[0], g, tuple(x.shape[-2:]), allow_flip=self.ctx.spec.allow_flip)
                    x = apply(x, p.to(x.device), self.train_dsa)
                # plain autograd: faster than torch.func.grad for this loop on CPU (speed_dc record)
                grads = mean_ce_grads(lambda xb: functional_call(self.net, (params, buffers), (xb,)),
                                      list(params.values()), x, y_all[idx], chunk)
                with torch.no_grad():
                    params = {k: (v - self.cfg.lr_net * dv).requires_grad_() for (k, v), dv in zip(params.items(), grads)}
        return {k: v.detach() for k, v in params.items()}

    # ------------------------------------------------------------------ protocol
    def step(self, iteration: int) -> dict[str, float]:
        g = self.ctx.generator
        params, buffers = self._fresh(g)
        total = 0.0
        for ol in range(self.outer):
            if self.bn:
                self._bn_statistics(params, buffers, g)
                self.net.eval()
            else:
                self.net.train()
            loss = self.match_loss(params, buffers, g)
            if not torch.isfinite(loss):
                raise DivergenceError(f"dc: matching loss became {float(loss)} at iteration {iteration}; lower "
                                         "method_config.lr_img and resume from the last checkpoint")
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            total += float(loss.detach())
            if ol == self.outer - 1:
                break
            params = self.train_network(params, buffers, g)
        return {"loss": total / self.outer}

    def state_dict(self) -> dict[str, Any]:
        return {"opt": self.opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.opt.load_state_dict(state["opt"])


register_method(MethodEntry(
    name="dc", config=DCConfig, build=DC, iterations=1000,
    network=config_model,
    description="Dataset Condensation with gradient matching (Zhao et al., ICLR 2021)",
))
register_method(MethodEntry(
    name="dsa", config=DSAMethodConfig, build=DC, iterations=1000, eval_preset="dsa",
    network=config_model,
    description="DC with differentiable siamese augmentation (Zhao & Bilen, ICML 2021)",
))
