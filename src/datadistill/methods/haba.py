"""HaBa: dataset distillation via factorization (bases x hallucinators).

Liu, Wang, Yang, Ye, Wang, "Dataset Distillation via Factorization", NeurIPS 2022 (arXiv 2210.16774).

The set is a `FactorizedSet`: ``bases_per_class`` base images per class and ``n_hallucinators``
small networks shared by all classes; each (hallucinator, base) pair is a training image. Training
is MTT's trajectory matching on hallucinated batches plus an adversarial contrastive pair:

1. trajectory loss (`methods.trajectory`): the student starts at an expert's epoch ``t`` and takes
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

Data: the released scripts all pass ``--zca`` (kornia's ``ZCAWhitening(eps=0.1)`` fitted on the
training set), so a HaBa run whitens by default (`MethodEntry.zca` 0.1; ``zca=null`` runs on the
mean/std-normalized images) and its experts must be trained on the same whitened data (``datadistill
experts --zca 0.1``); `trajectory.open_experts` refuses experts of another whitening in one line.

Storage: ``--ipc`` is the budget in images per class the set is compared against, and the file's
``ipc``. ``bases_rule`` maps it to bases per class (`bases_for_budget`): ``ipc`` (default, the
released code: ``--ipc`` bases, the hallucinators on top) or ``ipc-1`` (ours: ``max(1, ipc - 1)``,
about a plain set's storage); ``bases_per_class`` overrides both. The file records the factorization
(``bases_per_class``, ``n_hallucinators``), ``stored_floats`` next to ``budget_floats`` (what the
budget holds as plain images) and their quotient ``storage_ratio``; the run's final metrics state the
ratio too. (Files written before ``bases_rule`` used ``ipc-1``; files before ``stored_floats`` stored
the budget as ``budget_ipc`` and ``bases x hallucinators`` as ``ipc``; both still load as they were.)

Collapse: the final metrics, every intermediate evaluation's row, the report and the grid's caption
carry `synset.collapse.collapse_diagnostic`, each hallucination's correlation with its base and its
share of high-frequency energy over the base's (a hallucinator that is a blurred copy of its base
adds little a plain image would not).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ..config import ConfigError
from ..data.spec import LoadedDataset
from ..functional.contrastive import supervised_contrastive_loss
from ..models import MODELS, create_model
from ..seeding import derive_seed
from ..models.layers import check_choice
from ..synset.collapse import collapse_diagnostic
from ..synset.factorized import (BASES_RULES, FactorizedSet, FactorizedSettings, HallucinatorConfig, bases_for_budget,
                                 factorized_synset)
from .base import Context, MethodEntry, MethodHooks, config_model, format_metrics, register_method
from .trajectory import Matcher, TrajectoryMatching, check_matching, experts_meta


@dataclass(frozen=True)
class HaBaConfig(TrajectoryMatching):
    """`TrajectoryMatching`'s fields (flat in the YAML; ``lr_img`` and ``min_lr`` with the released
    code's defaults) plus the factorization and the adversarial contrastive pair."""

    # a run saved before ``bases_rule`` existed had ipc - 1 bases (`resolve.saved_config`)
    SAVED_BEFORE: ClassVar[dict[str, Any]] = {"bases_rule": "ipc-1"}

    lr_img: float = 100.0  # bases
    min_lr: float = 0.001
    lr_hallucinator: float = 100.0  # released value (ZCA CIFAR); 0.1 for un-whitened 1-channel data (README)
    momentum_img: float = 0.95  # bases and hallucinators
    momentum_lr: float = 0.9
    learn_lr: bool = True
    # the factorization
    bases_per_class: int | None = None  # None: from the budget by ``bases_rule``
    bases_rule: str = "ipc"  # "ipc": the released code's (more storage than ipc images); "ipc-1": equal storage
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

    def hallucinators(self) -> HallucinatorConfig:
        """The hallucinator fields as the set takes them."""
        return HallucinatorConfig(n_hallucinators=self.n_hallucinators, kernel_size=self.hallucinator_kernel,
                                  hidden_channels=self.hallucinator_channels, init=self.hallucinator_init,
                                  norm=self.hallucinator_norm)

    def __post_init__(self) -> None:
        super().__post_init__()  # the trajectory-matching fields
        self.hallucinators()  # checks the hallucinator fields
        if self.n_hallucinators < 2:
            raise ValueError(f"HaBa needs n_hallucinators >= 2 (its diversity loss compares two), got "
                             f"{self.n_hallucinators}")
        check_choice("haba", "bases_rule", self.bases_rule, BASES_RULES)
        if self.bases_per_class is not None and self.bases_per_class < 1:
            raise ValueError(f"bases_per_class must be >= 1 or null, got {self.bases_per_class}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        for name in ("lambda_club", "lambda_cls", "lambda_likeli", "lambda_contrast"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


def check_haba(cfg: HaBaConfig, ctx: Context) -> None:
    """HaBa's requirements before a run starts: a registered extractor model, no more bases per
    class than the smallest class has real images (the bases start from them), and trajectory
    matching's (`check_matching`)."""
    MODELS.get(cfg.extractor)
    bases = cfg.bases_per_class or bases_for_budget(ctx.ipc, cfg.bases_rule)
    n = min(ctx.data.train.class_count(c) for c in range(ctx.spec.num_classes))
    if bases > n:
        raise ConfigError(f"haba: bases_per_class {bases} is more than the smallest class of {ctx.spec.name} has "
                          f"({n} images); valid: 1..{n}")
    check_matching(cfg, ctx)


class HaBa(MethodHooks):
    def __init__(self, cfg: HaBaConfig, ctx: Context, experts: Any = None) -> None:
        self.cfg, self.ctx, self.synset = cfg, ctx, ctx.synset
        if not isinstance(self.synset, FactorizedSet) or self.synset.learned_lr() is None:
            raise ValueError("HaBa needs a FactorizedSet with a learned step size")
        spec = ctx.spec
        self.match = Matcher(cfg, ctx, experts)
        self.extractor = create_model(cfg.extractor, spec.channels, spec.num_classes, spec.image_size,
                                      seed=derive_seed(ctx.seed, "haba-extractor")).to(ctx.device).train()
        self.opt_bases = torch.optim.SGD(self.synset.base_parameters(), lr=cfg.lr_img, momentum=cfg.momentum_img)
        self.opt_hal = torch.optim.SGD(self.synset.hallucinator_parameters(), lr=cfg.lr_hallucinator,
                                       momentum=cfg.momentum_img)
        self.opt_lr = torch.optim.SGD([self.match.alpha], lr=cfg.lr_lr, momentum=cfg.momentum_lr)
        self.opt_ext = torch.optim.SGD(self.extractor.parameters(), lr=cfg.lr_extractor,
                                       momentum=cfg.momentum_extractor)

    # ------------------------------------------------------------------ pieces
    def _bases(self, g: torch.Generator) -> torch.Tensor:
        """The next chunk of base indices (a fresh permutation whenever the bases are used up)."""
        return self.match.next_chunk(len(self.synset.labels), g, self.synset.bases.device)

    def _steps(self, g: torch.Generator):
        """``syn_steps`` mini-batches of bases, each through one hallucinator drawn for the step, then DSA."""
        for _ in range(self.cfg.syn_steps):
            b = self._bases(g)
            h = int(torch.randint(self.synset.n_hallucinators, (1,), generator=g))
            yield self.match.augment(self.synset.hallucinate(h, b), g), self.synset.labels[b], self.match.alpha

    def _pair(self, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Extractor logits and embeddings of one chunk of bases through two distinct hallucinators."""
        b = self._bases(g)
        h0, h1 = torch.randperm(self.synset.n_hallucinators, generator=g)[:2].tolist()
        x = self.match.augment(torch.cat([self.synset.hallucinate(h0, b), self.synset.hallucinate(h1, b)]), g)
        feats = self.extractor.forward_features(x)
        return self.extractor.forward_head(feats), feats.flatten(1), self.synset.labels[b], b

    def trajectory_loss(self, expert: int, start_epoch: int, g: torch.Generator) -> torch.Tensor:
        return self.match.window_loss(expert, start_epoch, self._steps(g))

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
        expert, t = self.match.draw_window(g)
        param = self.trajectory_loss(expert, t, g)
        club = self.diversity_loss(g)
        loss = param + cfg.lambda_club * club
        learned = [*self.synset.base_parameters(), *self.synset.hallucinator_parameters()]
        a = self.match.update("haba", loss, iteration, [self.opt_bases, self.opt_hal, self.opt_lr], learned)
        # the extractor learns to see two hallucinations of a base as one (on images it cannot change)
        ext, parts = self.extractor_loss(g)
        self.opt_ext.zero_grad(set_to_none=True)
        ext.backward(inputs=list(self.extractor.parameters()))
        self.opt_ext.step()
        return {"loss": float(loss.detach()), "param_loss": float(param.detach()), "club": float(club.detach()),
                "extractor_loss": float(ext.detach()), **parts, "lr": a, "start_epoch": float(t)}

    def state_dict(self) -> dict[str, Any]:
        return {"opt_bases": self.opt_bases.state_dict(), "opt_hal": self.opt_hal.state_dict(),
                "opt_lr": self.opt_lr.state_dict(), "opt_ext": self.opt_ext.state_dict(),
                "extractor": self.extractor.state_dict(), "alpha": self.match.alpha.detach().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.extractor.load_state_dict(state["extractor"])
        for key, opt in (("opt_bases", self.opt_bases), ("opt_hal", self.opt_hal), ("opt_lr", self.opt_lr),
                         ("opt_ext", self.opt_ext)):
            opt.load_state_dict(state[key])
        self.match.load_alpha(state["alpha"])

    def file_meta(self) -> dict[str, Any]:
        """The factorization and its storage beside the budget's (the file's ``ipc`` is the set's, the
        budget); the collapse diagnostic is in the final metrics (the file's ``extra_report``)."""
        s, spec = self.synset, self.ctx.spec
        per_image = spec.channels * spec.image_size[0] * spec.image_size[1]
        return {"bases_per_class": s.bases_per_class, "n_hallucinators": s.n_hallucinators,
                "stored_floats": s.storage_numel(), "budget_floats": s.ipc * spec.num_classes * per_image,
                "storage_ratio": round(s.storage_ratio(), 4), "experts": experts_meta(self.match.experts)}

    def final_metrics(self, synset: Any, data: Any, device: torch.device) -> dict[str, Any]:
        """The storage ratio and the collapse diagnostic of the final set."""
        return {"storage_ratio": round(synset.storage_ratio(), 4), "bases_per_class": synset.bases_per_class,
                **collapse_diagnostic(synset).summary()}

    def eval_metrics(self) -> dict[str, Any]:
        """The collapse diagnostic, beside every intermediate evaluation."""
        return collapse_diagnostic(self.synset).summary()


def format_haba_metrics(metrics: dict[str, Any], *, markdown: bool = False, title: str = "final metrics") -> list[str]:
    """`format_metrics`, then each hallucinator's correlation with its base and high-frequency ratio."""
    lines = format_metrics(metrics, markdown=markdown, title=title)
    per = metrics.get("per_hallucinator") or []
    if not per:
        return lines
    if not markdown:
        return [*lines, "per hallucinator (correlation with its base, high-frequency ratio): "
                + ", ".join(f"h{h} {d['corr']:.2f} / {d['hf_ratio']:.2f}" for h, d in enumerate(per))]
    return [*lines, "Collapse diagnostic per hallucinator (`synset.collapse.collapse_diagnostic`):", "",
            "| hallucinator | correlation with its base | high-frequency ratio |", "|---|---|---|",
            *(f"| h{h} | {d['corr']:.3f} | {d['hf_ratio']:.3f} |" for h, d in enumerate(per)), ""]


def haba_synset(cfg: HaBaConfig, data: LoadedDataset, ipc: int, init: str, generator: torch.Generator) -> FactorizedSet:
    """HaBa's set (`MethodEntry.synset`): bases and hallucinators as the config says, the step size
    ``lr_teacher`` stored with it (learned unless ``learn_lr`` is false)."""
    settings = FactorizedSettings(cfg.hallucinators(), cfg.bases_per_class, cfg.bases_rule, cfg.lr_teacher, cfg.learn_lr)
    return factorized_synset(settings, data, ipc, init, generator)


def describe_haba(synset: FactorizedSet, meta: dict[str, Any]) -> list[str]:
    """`MethodEntry.describe`: the set's bases, hallucinators and storage against a plain set, then how
    far its hallucinators collapsed (`collapse_diagnostic`)."""
    budget = meta.get("budget_ipc")  # the released files name the budget here
    ratio = synset.storage_ratio() * synset.ipc / budget if budget else synset.storage_ratio()
    return [f"{synset.bases_per_class} bases x {synset.n_hallucinators} hallucinators per class; storage "
            f"{ratio:.3f}x a plain set of {budget or synset.ipc} image(s) per class",
            *collapse_diagnostic(synset).lines()]


register_method(MethodEntry(
    name="haba", config=HaBaConfig, build=HaBa, iterations=15000, eval_preset="mtt",
    synset=haba_synset, describe=describe_haba, check=check_haba, zca=0.1, format_metrics=format_haba_metrics,
    network=config_model,
    description="HaBa, factorized sets of bases x hallucinators (Liu et al., NeurIPS 2022); needs `datadistill experts`",
))
