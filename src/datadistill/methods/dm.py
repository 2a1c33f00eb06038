"""Distribution Matching (DM).

Zhao & Bilen, "Dataset Condensation with Distribution Matching", WACV 2023 (arXiv 2110.04181).

Each iteration samples a freshly initialized network psi_theta (its parameters are never trained)
and matches, for every class c, the mean embedding of a real batch and of the synthetic images
of that class (the paper's Eq. 3-4, with the empirical MMD reduced to mean embeddings):

    L = sum_c || 1/|B_c| sum_{x in B_c} psi(A(x, w_c)) - 1/ipc sum_{s in S_c} psi(A(s, w_c)) ||^2

where A is DSA with parameters w_c shared by the real and the synthetic batch of class c.
The synthetic images are updated by SGD (lr 1.0, momentum 0.5). All classes go through the
network in one batched forward (the real batch without autograd), not one class at a time.
When a class has fewer than ``batch_real`` training images, every class uses that smaller count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..augment import DSAConfig
from ..functional import class_mean_distance, pick_chunk
from ..models import create_model
from .base import Context, MethodEntry, MethodHooks, check_ranges, class_batches, config_model, register_method


@dataclass(frozen=True)
class DMConfig:
    lr_img: float = 1.0
    momentum: float = 0.5
    batch_real: int = 256
    model: str = "convnet"
    dsa: bool = True
    dsa_strategy: str = "color_crop_cutout_flip_scale_rotate"
    # images per forward chunk of the (gradient-free) real batch; None: `functional.pick_chunk` (small
    # chunks on the CPU, which keep the activations in cache; the whole batch on a GPU)
    real_chunk: int | None = None
    channels_last: bool = True

    def __post_init__(self) -> None:
        positive = ("batch_real",) + (("real_chunk",) if self.real_chunk is not None else ())
        check_ranges("dm", self, dsa_strategy=self.dsa_strategy if self.dsa else None, positive=positive,
                     rates=("lr_img",), momenta=("momentum",))


class DM(MethodHooks):
    def __init__(self, cfg: DMConfig, ctx: Context) -> None:
        self.cfg, self.ctx = cfg, ctx
        self.synset = ctx.synset
        self.opt = torch.optim.SGD([self.synset.images], lr=cfg.lr_img, momentum=cfg.momentum)
        self.dsa = DSAConfig(strategy=cfg.dsa_strategy) if cfg.dsa else None
        counts = [ctx.data.train.class_count(c) for c in range(ctx.spec.num_classes)]
        self.n_real = min(cfg.batch_real, min(counts))
        whole = self.n_real * ctx.spec.num_classes
        self.real_chunk = cfg.real_chunk or pick_chunk(ctx.device, independent=True) or whole

    # the resumable state: the optimizer over the images (the set saves itself)
    def state_dict(self) -> dict[str, Any]:
        return {"opt": self.opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.opt.load_state_dict(state["opt"])

    def _embed(self, net: torch.nn.Module, x: torch.Tensor, chunk: int) -> torch.Tensor:
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return torch.cat([net.forward_features(x[i : i + chunk]) for i in range(0, x.shape[0], chunk)])

    def step(self, iteration: int) -> dict[str, float]:
        ctx, cfg, spec = self.ctx, self.cfg, self.ctx.spec
        g = ctx.generator
        C, ipc = spec.num_classes, self.synset.ipc
        net = create_model(cfg.model, spec.channels, C, spec.image_size,
                           seed=int(torch.randint(0, 2**62, (1,), generator=g))).to(ctx.device)
        if cfg.channels_last:
            net = net.to(memory_format=torch.channels_last)
        net.train()
        net.requires_grad_(False)

        real, syn = class_batches(ctx, self.n_real, self.dsa, g)
        with torch.no_grad():
            f_real = self._embed(net, real, self.real_chunk)
        f_syn = self._embed(net, syn, syn.shape[0])
        loss = class_mean_distance(f_real.view(C, self.n_real, -1), f_syn.view(C, ipc, -1))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"loss": float(loss.detach())}


register_method(MethodEntry(
    name="dm", config=DMConfig, build=DM, iterations=20000,
    network=config_model,
    description="Distribution Matching (Zhao & Bilen, WACV 2023)",
))
