"""Dataset Distillation (DD).

Wang, Zhu, Torralba, Efros, "Dataset Distillation", arXiv 1811.10959 (2018).

The distilled data are ``steps`` groups of images (``ipc / steps`` per class in each) and a learned
step size ``eta_{e,s}`` per step and epoch (Section 3.4: several steps and epochs). Starting from
network weights theta_0, the inner loop applies the SGD steps of Eq. (1) on the distilled data,

    theta_{i+1} = theta_i - eta_i * grad_theta l(x~_i, theta_i),

for ``epochs`` passes over the steps, and the outer objective (Eq. 2-3) is the loss of the final
weights on a real batch, back-propagated through the unrolled steps into the images and the step
sizes (Adam with betas (0.5, 0.999) as in the paper's code; its lr halved every quarter of the run).
Networks start from Xavier-normal weights, the reference code's default.

Network initialization settings (``net_init``, Section 3.2 / 3.5): ``fixed`` ties the data to one known theta_0 (stored
by seed and replayed at evaluation); ``random`` draws theta_0 afresh every iteration (or from
``init_pool`` fixed ones) and is evaluated on fresh initializations never seen in training;
``pretrained_fixed`` / ``pretrained_random`` start from networks trained on ``source_dataset``
(a pool, `pools`), evaluated on the pool's held-out networks; a source other than
the distilled dataset is domain adaptation. Objectives (Section 3.6): classification, or
``poison``: the real batch's ``attack_class`` labels become ``target_class``.
BatchNorm models are refused: running statistics inside unrolled steps are ill-defined.

The package: this module (config, set, method), `baselines` (k-means and average images),
`pools` (pretrained networks, ``datadistill pretrain``), `networks` (what evaluation starts from)
and `report` (before/after metrics, a file's evaluation); `__init__` registers the method with
its hooks, through which the engine and the CLI reach it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from ...config import ConfigError
from ...data import DATASETS, load_dataset
from ...data.spec import LoadedDataset
from ...functional.unroll import evaluate_params, params_of, unrolled_sgd
from ...models import WEIGHT_INITS, create_model, has_batchnorm
from ...seeding import derive_seed
from ...synset import StepSet
from ..base import Context, DivergenceError, MethodHooks
from .baselines import baseline_images
from .networks import fixed_init
from .pools import Pool, PoolNets, check_pool, open_pool
from .report import before_after

NET_INITS = ("fixed", "random", "pretrained_fixed", "pretrained_random")
OBJECTIVES = ("classification", "poison")


@dataclass(frozen=True)
class DDConfig:
    RENAMED: ClassVar[dict[str, str]] = {"init": "net_init", "checkpoint": "grad_checkpoint"}  # old key -> new

    model: str = "lenet"
    weight_init: str = "xavier"  # initialization distribution of theta_0 (the reference code's default)
    # network initialization setting (Sections 3.2 and 3.5): one fixed theta_0; a fresh random one
    # every iteration; one pretrained network; pretrained networks drawn from a pool
    net_init: str = "fixed"
    steps: int | None = None  # GD steps per epoch; None: ipc, i.e. one image per class per step
    epochs: int = 3  # passes over the steps
    # initial step size and Adam's lr on images and step sizes; None: 0.2 and 0.05 for the fixed
    # setting, 0.01 and 0.01 for the others (tuned on MNIST at a CPU budget of a few thousand
    # iterations; the reference code uses 0.001 and 0.01 over ~23,000 iterations)
    lr_init: float | None = None
    learn_lr: bool = True
    learn_images: bool = True  # False: only the step sizes are learned (the paper's real-image baselines)
    lr: float | None = None
    beta1: float = 0.5
    # Adam's lr is multiplied by decay_factor every decay_every iterations; None: a quarter of the run
    # (the reference halves it every tenth of a much longer run)
    decay_every: int | None = None
    decay_factor: float = 0.5
    batch_real: int = 1024
    n_nets: int = 1  # initializations per iteration (random settings), losses averaged
    init_pool: int = 0  # random init: 0 = a fresh theta_0 every time; n = draw from n fixed ones
    grad_checkpoint: bool = False  # gradient checkpointing over the unrolled steps (memory for time)
    # objective (Section 3.6): "poison" makes networks classify attack_class as target_class
    objective: str = "classification"
    attack_class: int = 0
    target_class: int = 1
    # pretrained settings: a pool folder from `datadistill pretrain`, or None to train (and cache) one on
    # source_dataset (None: the distilled dataset; another dataset: domain adaptation source -> target)
    pretrained: str | None = None
    source_dataset: str | None = None
    pool_nets: int = 30
    pool_held_out: int = 20
    pool_epochs: int | None = None  # None: 3, or more on a small source set (at least ~1,400 SGD steps of 128)

    def __post_init__(self) -> None:
        for name, value, valid in (("net_init", self.net_init, NET_INITS), ("objective", self.objective, OBJECTIVES)):
            if value not in valid:
                raise ConfigError(f"dd: unknown {name} {value!r}; valid: {', '.join(valid)}")
        if self.objective == "poison" and self.attack_class == self.target_class:
            raise ConfigError("dd: poisoning needs attack_class != target_class")
        bad = [f"{name} must be {rule}, got {value!r}" for name, value, ok, rule in (
            ("steps", self.steps, self.steps is None or self.steps >= 1, ">= 1 or null (= ipc)"),
            ("epochs", self.epochs, self.epochs >= 1, ">= 1"),
            ("lr_init", self.lr_init, self.lr_init is None or self.lr_init > 0, "> 0 or null"),
            ("lr", self.lr, self.lr is None or self.lr > 0, "> 0 or null"),
            ("beta1", self.beta1, 0 <= self.beta1 < 1, "in [0, 1)"),
            ("decay_every", self.decay_every, self.decay_every is None or self.decay_every >= 1, ">= 1 or null"),
            ("decay_factor", self.decay_factor, self.decay_factor > 0, "> 0"),
            ("batch_real", self.batch_real, self.batch_real >= 1, ">= 1"),
            ("n_nets", self.n_nets, self.n_nets >= 1, ">= 1"),
            ("init_pool", self.init_pool, self.init_pool >= 0, ">= 0 (0: a fresh theta_0 every time)"),
            ("pool_epochs", self.pool_epochs, self.pool_epochs is None or self.pool_epochs >= 1, ">= 1 or null"),
            ("pool_nets", self.pool_nets, self.pool_nets >= 1, ">= 1"),
            ("pool_held_out", self.pool_held_out, 0 <= self.pool_held_out < self.pool_nets, "in 0..pool_nets-1"),
        ) if not ok]
        if bad:
            raise ConfigError("dd: " + "; ".join(bad))
        WEIGHT_INITS.get(self.weight_init)  # unknown names list the valid ones
        if self.source_dataset is not None:
            DATASETS.get(self.source_dataset)

    @property
    def step_size_init(self) -> float:
        return self.lr_init if self.lr_init is not None else (0.2 if self.net_init == "fixed" else 0.01)

    @property
    def adam_lr(self) -> float:
        return self.lr if self.lr is not None else (0.05 if self.net_init == "fixed" else 0.01)

    @property
    def pretrained_setting(self) -> bool:
        return self.net_init.startswith("pretrained")

    def setting(self, dataset: str) -> str:
        """The benchmark records' name for this configuration."""
        if self.objective == "poison":
            return "poison"
        source = self.source_dataset or dataset
        if self.pretrained_setting and source != dataset:
            return f"adapt-{source}-{dataset}"
        return self.net_init


def _steps(cfg: DDConfig, ipc: int) -> int:
    steps = cfg.steps or ipc
    if steps < 1 or ipc % steps:
        raise ConfigError(f"dd: ipc={ipc} images per class do not split into steps={steps} steps "
                          "(ipc must be a multiple of steps)")
    return steps


def make_set(cfg: DDConfig, data: LoadedDataset, ipc: int, image_init: str, g: torch.Generator) -> StepSet:
    """DD's set (the entry's ``synset``): ``ipc`` images per class in ``steps`` steps, initialized
    from ``image_init`` (real, noise, or a baseline of `baselines`)."""
    steps = _steps(cfg, ipc)
    kw = dict(lrs=cfg.step_size_init, learn_lr=cfg.learn_lr)
    if image_init == "real":
        s = StepSet.from_real(data.train, ipc // steps, steps, cfg.epochs, g, **kw)
    elif image_init == "noise":
        s = StepSet.from_noise(data.spec, ipc // steps, steps, cfg.epochs, g, **kw)
    else:
        x = baseline_images(image_init, data.train, ipc, g).cpu()  # [C, ipc] class-major -> step-major
        c = data.spec.num_classes
        x = x.view(c, steps, ipc // steps, *x.shape[1:]).transpose(0, 1).reshape(-1, *x.shape[1:])
        s = StepSet(x, c, steps, cfg.epochs, **kw)
    s.images.requires_grad_(cfg.learn_images)
    return s


def check_network(cfg: DDConfig, spec, net: nn.Module) -> None:
    """The unrolled network has no BatchNorm, and the poisoning classes are classes of ``spec``."""
    if has_batchnorm(net):
        raise ConfigError(f"dd: model {cfg.model!r} has BatchNorm, whose running statistics are ill-defined "
                          "inside unrolled steps; use a model without it (lenet, convnet, convnet_nn, mlp ...)")
    if cfg.objective == "poison":
        for name in ("attack_class", "target_class"):
            if not 0 <= getattr(cfg, name) < spec.num_classes:
                raise ConfigError(f"dd: {name}={getattr(cfg, name)} is not a class of {spec.name} "
                                  f"(0..{spec.num_classes - 1})")


def check_dd(cfg: DDConfig, ctx: Context) -> None:
    """DD's requirements, checked before a run starts (`MethodEntry.check`): the steps divide the
    images per class, the model fits (`check_network`), and a pretrained setting's pool folder
    (``pretrained``) exists, is complete and fits the data and the model, or, when the pool is to be
    trained, its source dataset is on disk."""
    s = ctx.spec
    _steps(cfg, ctx.ipc)
    check_network(cfg, s, create_model(cfg.model, s.channels, s.num_classes, s.image_size, seed=0))
    if not cfg.pretrained_setting:
        return
    if cfg.pretrained:
        check_pool(Pool(cfg.pretrained), cfg.model, s)
    elif cfg.source_dataset and DATASETS.canonical(cfg.source_dataset) != s.name:
        load_dataset(cfg.source_dataset, ctx.data_root)  # the pool is trained on it


class DD(MethodHooks):
    def __init__(self, cfg: DDConfig, ctx: Context) -> None:
        self.cfg, self.ctx, self.synset = cfg, ctx, ctx.synset
        self.theta0_seed = derive_seed(ctx.seed, "dd-theta0")
        self.net = self._net(self.theta0_seed)
        check_network(cfg, ctx.spec, self.net)
        self.pool: Pool | None = None
        self.pretrained: list[dict[str, torch.Tensor]] = []
        if cfg.pretrained_setting:
            self.pool = open_pool(cfg, ctx)
            train = self.pool.train_indices[:1] if cfg.net_init == "pretrained_fixed" else self.pool.train_indices
            self.pretrained = [params_of(self.pool.network(i).to(ctx.device), requires_grad=False) for i in train]
        self.theta0 = params_of(self.net, requires_grad=False)
        self.pool_seeds = [derive_seed(ctx.seed, "dd-pool", i) for i in range(cfg.init_pool)]
        params = ([self.synset.images] if cfg.learn_images else []) + ([self.synset.raw_lrs] if cfg.learn_lr else [])
        if not params and ctx.iterations > 0:
            raise ConfigError("dd: nothing to learn (learn_images and learn_lr are both false); "
                              "evaluate the initial set with iterations=0 instead")
        if not params:  # iterations=0: a baseline evaluated as initialized
            params = [torch.zeros(1, requires_grad=True)]
        self.opt = torch.optim.Adam(params, lr=cfg.adam_lr, betas=(cfg.beta1, 0.999))
        every = cfg.decay_every or max(1, ctx.iterations // 4)
        self.sched = torch.optim.lr_scheduler.StepLR(self.opt, step_size=every, gamma=cfg.decay_factor)
        self.n_real = min(cfg.batch_real, len(ctx.data.train))

    def _net(self, seed: int) -> nn.Module:
        s = self.ctx.spec
        return create_model(self.cfg.model, s.channels, s.num_classes, s.image_size, seed=seed,
                            weight_init=self.cfg.weight_init).to(self.ctx.device)

    def _initializations(self, g: torch.Generator) -> list[dict[str, torch.Tensor]]:
        cfg = self.cfg
        if cfg.net_init == "fixed":
            return [self.theta0]
        if cfg.net_init == "pretrained_fixed":
            return self.pretrained
        out = []
        for _ in range(cfg.n_nets):
            if cfg.net_init == "pretrained_random":
                out.append(self.pretrained[int(torch.randint(len(self.pretrained), (1,), generator=g))])
                continue
            if self.pool_seeds:
                seed = self.pool_seeds[int(torch.randint(len(self.pool_seeds), (1,), generator=g))]
            else:
                seed = int(torch.randint(0, 2**62, (1,), generator=g))
            out.append(params_of(self._net(seed), requires_grad=False))
        return out

    def step(self, iteration: int) -> dict[str, float]:
        g, data = self.ctx.generator, self.ctx.data.train
        idx = torch.randperm(len(data), generator=g)[: self.n_real].to(data.device)
        x_real, y_real = data.images[idx], data.labels[idx]
        if self.cfg.objective == "poison":  # the attack class should be predicted as the target
            y_real = torch.where(y_real == self.cfg.attack_class, self.cfg.target_class, y_real)
        schedule = self.synset.schedule()
        thetas = self._initializations(g)
        loss = sum(evaluate_params(self.net, unrolled_sgd(self.net, th, schedule, grad_checkpoint=self.cfg.grad_checkpoint),
                                   x_real, y_real) for th in thetas) / len(thetas)
        # divergence is caught before the update: the set and the optimizer stay in their last good state
        if not torch.isfinite(loss):
            raise DivergenceError(f"dd: the loss became {float(loss.detach())} at iteration {iteration + 1}; lower "
                                  "method_config.lr or lr_init")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if any(p.grad is not None and not bool(torch.isfinite(p.grad).all())
               for group in self.opt.param_groups for p in group["params"]):
            raise DivergenceError(f"dd: non-finite gradient at iteration {iteration + 1}; lower method_config.lr or "
                                  "lr_init")
        self.opt.step()
        self.sched.step()
        lrs = self.synset.lrs().detach()
        return {"loss": float(loss.detach()), "lr_min": float(lrs.min()), "lr_max": float(lrs.max())}

    def eval_networks(self) -> Callable[[int, str], nn.Module] | None:
        if self.cfg.net_init == "random":
            return None  # fresh initializations from the protocol's seeds, never seen in training
        if self.cfg.net_init == "fixed":
            return fixed_init(self.cfg.model, self.theta0_seed, self.ctx.spec, self.cfg.weight_init)
        assert self.pool is not None
        return PoolNets.for_setting(self.pool, self.cfg.net_init)

    def file_meta(self) -> dict[str, Any]:
        info: dict[str, Any] = {"setting": self.cfg.net_init, "model": self.cfg.model, "weight_init": self.cfg.weight_init}
        if self.cfg.net_init == "fixed":
            info["seed"] = self.theta0_seed
        if self.pool is not None:
            info["pool"] = str(self.pool.path.resolve())
            info["pool_dataset"] = self.pool.config.dataset
        meta: dict[str, Any] = {"net_init": info, "setting": self.cfg.setting(self.ctx.spec.name)}
        if self.cfg.objective == "poison":
            meta["poison"] = {"attack_class": self.cfg.attack_class, "target_class": self.cfg.target_class}
        return meta

    def final_metrics(self, synset: Any, data: LoadedDataset, device: torch.device) -> dict[str, Any] | None:
        """Before/after numbers for the pretrained settings (adaptation, poisoning): the evaluation
        networks on the test set before and after training on the distilled steps."""
        if self.cfg.net_init not in ("pretrained_fixed", "pretrained_random"):
            return None
        poison = (self.cfg.attack_class, self.cfg.target_class) if self.cfg.objective == "poison" else None
        return before_after(synset, data, self.eval_networks(), poison=poison, device=device)

    def state_dict(self) -> dict[str, Any]:
        return {"opt": self.opt.state_dict(), "sched": self.sched.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
