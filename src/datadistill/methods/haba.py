"""HaBa: dataset distillation via factorization (bases x hallucinators).

Liu, Wang, Yang, Ye, Wang, "Dataset Distillation via Factorization", NeurIPS 2022 (arXiv 2210.16774).

The set is a `FactorizedSet`: ``bases_per_class`` base images per class and ``n_hallucinators``
small networks shared by all classes; each (hallucinator, base) pair is a training image. Training
is MTT's trajectory matching on hallucinated batches plus an adversarial contrastive pair:

1. trajectory loss (`methods.mtt`): the student starts at an expert's epoch ``t`` and takes
   ``syn_steps`` differentiable SGD steps with the learned step size; each step hallucinates a
   mini-batch of bases through *one* hallucinator drawn for that step, then DSA;
2. diversity: the same bases through two different hallucinators go through a feature extractor;
   the set minimizes ``lambda_club * mean (cos(f(H_i(b)), f(H_j(b))) + 1) / 2`` so that the
   hallucinations of a base stay different from one another;
3. the extractor (a ConvNet, its own SGD) is trained the other way on a fresh such pair:
   classification ``lambda_cls * CE`` + agreement ``lambda_likeli * mean (1 - cos) / 2`` +
   supervised contrastive ``lambda_contrast * SupCon(t=0.07)``.

Bases (SGD lr ``lr_img``, momentum 0.95), hallucinators (lr ``lr_hallucinator``, momentum 0.95)
and the step size (lr ``lr_lr``, momentum 0.9) step on loss 1 + 2; the extractor (lr 0.001,
momentum 0.9) on loss 3. The step size is clamped to ``>= min_lr`` (0.001, as the released code).
Loss weights are the released scripts' (0.1 / 1 / 0.1 / 0.1). Hyper-parameters otherwise follow
MTT's; the released CIFAR-10 settings are presets.

Options of ours, off by default (the released code has neither): ``hallucinator_init="identity"``
starts the hallucinators near the identity, and ``hallucinator_norm="base"`` rescales every
hallucination to its base's mean and standard deviation, which stops the drift of the
hallucinations' scale that the instance-normalized ConvNet cannot see (`synset.factorized`).

Storage: ``--ipc`` is the image budget the set is compared against; by default the set gets
``max(1, ipc - 1)`` bases per class (1 / 9 / 49 for 1 / 10 / 50), the hallucinators taking the rest.
The file records ``budget_ipc``, ``bases_per_class``, ``n_hallucinators`` and ``stored_floats``
next to what the same budget costs as plain images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..augment import DSAConfig
from ..config import ConfigError
from ..functional.contrastive import supervised_contrastive_loss
from ..functional.trajectory import trajectory_loss
from ..functional.unroll import buffers_of, unrolled_sgd
from ..models import MODELS, create_model
from ..seeding import derive_seed
from ..synset.factorized import HallucinatorConfig, default_bases_per_class, factorized_synset
from .base import Context, MethodEntry, MethodHooks, register_method
from .mtt import (check_matching, check_matching_config, draw_window, dsa_batch, experts_meta, guarded_update,
                  next_chunk, open_experts, store_step_size, student_model)


@dataclass(frozen=True)
class HaBaConfig:
    experts: str | None = None
    model: str = "convnet"
    syn_steps: int = 20
    expert_epochs: int = 3
    max_start_epoch: int = 25
    lr_img: float = 100.0  # bases
    lr_hallucinator: float = 100.0  # released value (ZCA CIFAR); 0.1 for un-whitened 1-channel data (README)
    lr_lr: float = 1e-05
    lr_teacher: float = 0.01
    momentum_img: float = 0.95
    momentum_lr: float = 0.9
    batch_syn: int | None = None  # bases per unrolled step; None: all of them
    dsa: bool = True
    dsa_strategy: str = "color_crop_cutout_flip_scale_rotate"
    checkpoint: bool = False
    min_lr: float = 0.001
    max_lr: float = 1.0
    learn_lr: bool = True
    # the factorization
    bases_per_class: int | None = None  # None: max(1, ipc - 1)
    n_hallucinators: int = 5
    hallucinator_kernel: int = 3
    hallucinator_channels: int | None = None  # None: the image's channels
    hallucinator_init: str = "default"  # released: PyTorch's conv init; "identity": near-identity (ours)
    hallucinator_norm: str = "none"  # released: none; "base": rescale to the base's mean and std (ours)
    # the adversarial contrastive pair
    extractor: str = "convnet"
    lr_extractor: float = 0.001
    momentum_extractor: float = 0.9
    lambda_club: float = 0.1
    lambda_cls: float = 1.0
    lambda_likeli: float = 0.1
    lambda_contrast: float = 0.1
    temperature: float = 0.07

    def __post_init__(self) -> None:
        check_matching_config(self)
        HallucinatorConfig.of(self)  # checks the hallucinator fields
        if self.n_hallucinators < 2:
            raise ValueError(f"HaBa needs n_hallucinators >= 2 (its diversity loss compares two), got "
                             f"{self.n_hallucinators}")
        if self.bases_per_class is not None and self.bases_per_class < 1:
            raise ValueError(f"bases_per_class must be >= 1 or null, got {self.bases_per_class}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        for name in ("lambda_club", "lambda_cls", "lambda_likeli", "lambda_contrast"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def epochs_needed(self) -> int:
        return self.max_start_epoch - 1 + self.expert_epochs


def check_haba(cfg: HaBaConfig, ctx: Context) -> None:
    """HaBa's requirements before a run starts: a registered extractor model, no more bases per
    class than the smallest class has real images (the bases start from them), and trajectory
    matching's (`check_matching`)."""
    MODELS.get(cfg.extractor)
    bases = cfg.bases_per_class or default_bases_per_class(ctx.ipc)
    n = min(ctx.data.train.class_count(c) for c in range(ctx.spec.num_classes))
    if bases > n:
        raise ConfigError(f"haba: bases_per_class {bases} is more than the smallest class of {ctx.spec.name} has "
                          f"({n} images); valid: 1..{n}")
    check_matching(cfg, ctx)


class HaBa(MethodHooks):
    def __init__(self, cfg: HaBaConfig, ctx: Context, experts: Any = None) -> None:
        self.cfg, self.ctx, self.synset = cfg, ctx, ctx.synset
        if not hasattr(self.synset, "hallucinators") or self.synset.learned_lr() is None:
            raise ValueError("HaBa needs a FactorizedSet with a learned step size")
        spec = ctx.spec
        self.net = student_model(cfg.model, spec, ctx.device)
        self.buffers = buffers_of(self.net)
        self.experts = experts if experts is not None else open_experts(cfg, ctx)
        self.extractor = create_model(cfg.extractor, spec.channels, spec.num_classes, spec.image_size,
                                      seed=derive_seed(ctx.seed, "haba-extractor")).to(ctx.device).train()
        self.alpha = torch.tensor(float(self.synset.learned_lr()), device=ctx.device, requires_grad=True)
        self.opt_bases = torch.optim.SGD(self.synset.base_parameters(), lr=cfg.lr_img, momentum=cfg.momentum_img)
        self.opt_hal = torch.optim.SGD(self.synset.hallucinator_parameters(), lr=cfg.lr_hallucinator,
                                       momentum=cfg.momentum_img)
        self.opt_lr = torch.optim.SGD([self.alpha], lr=cfg.lr_lr, momentum=cfg.momentum_lr)
        self.opt_ext = torch.optim.SGD(self.extractor.parameters(), lr=cfg.lr_extractor,
                                       momentum=cfg.momentum_extractor)
        self.dsa = DSAConfig(strategy=cfg.dsa_strategy, op_choice="per_batch") if cfg.dsa else None
        self._chunks: list[torch.Tensor] = []

    # ------------------------------------------------------------------ pieces
    def _augment(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return dsa_batch(self.dsa, x, g, self.ctx.spec.flip)

    def _bases(self, g: torch.Generator) -> torch.Tensor:
        """The next chunk of base indices (a fresh permutation whenever the bases are used up)."""
        n = len(self.synset.labels)
        return next_chunk(self._chunks, n, self.cfg.batch_syn or n, g, self.synset.bases.device)

    def _steps(self, g: torch.Generator):
        for _ in range(self.cfg.syn_steps):
            b = self._bases(g)
            h = int(torch.randint(self.synset.n_hallucinators, (1,), generator=g))
            yield self._augment(self.synset.hallucinate(h, b), g), self.synset.labels[b], self.alpha

    def _pair(self, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Extractor logits and embeddings of one chunk of bases through two distinct hallucinators."""
        b = self._bases(g)
        h0, h1 = torch.randperm(self.synset.n_hallucinators, generator=g)[:2].tolist()
        x = self._augment(torch.cat([self.synset.hallucinate(h0, b), self.synset.hallucinate(h1, b)]), g)
        feats = self.extractor.forward_features(x)
        return self.extractor.forward_head(feats), feats.flatten(1), self.synset.labels[b], b

    def trajectory_loss(self, expert: int, start_epoch: int, g: torch.Generator) -> torch.Tensor:
        dev = self.ctx.device
        start = self.experts.params(expert, start_epoch, device=dev)
        target = self.experts.params(expert, start_epoch + self.cfg.expert_epochs, device=dev)
        student = unrolled_sgd(self.net, start, self._steps(g), buffers=self.buffers, checkpoint=self.cfg.checkpoint)
        return trajectory_loss(student, start, target)

    def diversity_loss(self, g: torch.Generator) -> torch.Tensor:
        """Similarity of two hallucinations of the same bases under the extractor (the set minimizes it)."""
        _, emb, _, b = self._pair(g)
        n = len(b)
        return ((F.cosine_similarity(emb[:n], emb[n:]) + 1) / 2).mean()

    def extractor_loss(self, g: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.cfg
        logits, emb, y, b = self._pair(g)
        n = len(b)
        cls = F.cross_entropy(logits, torch.cat([y, y]))
        likeli = ((1 - F.cosine_similarity(emb[:n], emb[n:])) / 2).mean()
        z = F.normalize(emb, dim=1)
        con = supervised_contrastive_loss(torch.stack([z[:n], z[n:]], dim=1), y, cfg.temperature, cfg.temperature)
        total = cfg.lambda_cls * cls + cfg.lambda_likeli * likeli + cfg.lambda_contrast * con
        return total, {"extractor_cls": float(cls.detach()), "extractor_contrast": float(con.detach())}

    # ------------------------------------------------------------------ protocol
    def step(self, iteration: int) -> dict[str, float]:
        cfg, g = self.cfg, self.ctx.generator
        expert, t = draw_window(len(self.experts), cfg.max_start_epoch, g)
        param = self.trajectory_loss(expert, t, g)
        club = self.diversity_loss(g)
        loss = param + cfg.lambda_club * club
        learned = [*self.synset.base_parameters(), *self.synset.hallucinator_parameters()]
        a = guarded_update("haba", loss, iteration, [self.opt_bases, self.opt_hal, self.opt_lr], learned,
                           self.alpha, cfg.min_lr, cfg.max_lr)
        self._store_alpha()
        # the extractor learns to see two hallucinations of a base as one (on images it cannot change)
        ext, parts = self.extractor_loss(g)
        self.opt_ext.zero_grad(set_to_none=True)
        ext.backward(inputs=list(self.extractor.parameters()))
        self.opt_ext.step()
        return {"loss": float(loss.detach()), "param_loss": float(param.detach()), "club": float(club.detach()),
                "extractor_loss": float(ext.detach()), **parts, "lr": a, "start_epoch": float(t)}

    def _store_alpha(self) -> None:
        store_step_size(self.synset, self.alpha)

    def state_dict(self) -> dict[str, Any]:
        return {"opt_bases": self.opt_bases.state_dict(), "opt_hal": self.opt_hal.state_dict(),
                "opt_lr": self.opt_lr.state_dict(), "opt_ext": self.opt_ext.state_dict(),
                "extractor": self.extractor.state_dict(), "alpha": self.alpha.detach().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.extractor.load_state_dict(state["extractor"])
        for key, opt in (("opt_bases", self.opt_bases), ("opt_hal", self.opt_hal), ("opt_lr", self.opt_lr),
                         ("opt_ext", self.opt_ext)):
            opt.load_state_dict(state[key])
        with torch.no_grad():
            self.alpha.copy_(state["alpha"])
        self._store_alpha()

    def file_meta(self) -> dict[str, Any]:
        s, spec = self.synset, self.ctx.spec
        per_image = spec.channels * spec.image_size[0] * spec.image_size[1]
        return {"budget_ipc": self.ctx.ipc, "bases_per_class": s.bases_per_class,
                "n_hallucinators": s.n_hallucinators, "stored_floats": s.storage_numel(),
                "budget_floats": self.ctx.ipc * spec.num_classes * per_image,
                "experts": experts_meta(self.experts)}


register_method(MethodEntry(
    name="haba", config=HaBaConfig, build=HaBa, iterations=15000, init="real", eval_preset="mtt",
    synset=factorized_synset, check=check_haba,
    description="HaBa, factorized sets of bases x hallucinators (Liu et al., NeurIPS 2022); needs `datadistill experts`",
))
