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

Initialization settings (Section 3.2 / 3.5): ``fixed`` ties the data to one known theta_0 (stored
by seed and replayed at evaluation); ``random`` draws theta_0 afresh every iteration (or from
``init_pool`` fixed ones) and is evaluated on fresh initializations never seen in training;
``pretrained_fixed`` / ``pretrained_random`` start from networks trained on ``source_dataset``
(a pool from `datadistill.pool`), evaluated on the pool's held-out networks; a source other than
the distilled dataset is domain adaptation. Objectives (Section 3.6): classification, or
``poison``: the real batch's ``attack_class`` labels become ``target_class``.
BatchNorm models are refused: running statistics inside unrolled steps are ill-defined.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..cache import keyed_dir
from ..config import ConfigError
from ..data import DATASETS, load_dataset
from ..data.spec import LoadedDataset
from ..functional.unroll import evaluate_params, params_of, unrolled_sgd
from ..models import MODELS, WEIGHT_INITS, create_model, has_batchnorm
from ..pool import Pool, PoolConfig, PoolError, pretrain_pool
from ..seeding import derive_seed
from ..synset import StepSet
from ..train import replay_steps
from .base import Context, DivergenceError, MethodEntry, MethodHooks, register_method


INITS = ("fixed", "random", "pretrained_fixed", "pretrained_random")
OBJECTIVES = ("classification", "poison")
IMAGE_INITS = ("noise", "real", "kmeans", "average")  # the last three are the paper's baselines


@dataclass(frozen=True)
class DDConfig:
    model: str = "lenet"
    weight_init: str = "xavier"  # initialization distribution of theta_0 (the reference code's default)
    # network initialization setting (Sections 3.2 and 3.5): one fixed theta_0; a fresh random one
    # every iteration; one pretrained network; pretrained networks drawn from a pool
    init: str = "fixed"
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
    checkpoint: bool = False  # gradient checkpointing over the unrolled steps (memory for time)
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
        for name, value, valid in (("init", self.init, INITS), ("objective", self.objective, OBJECTIVES)):
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
        return self.lr_init if self.lr_init is not None else (0.2 if self.init == "fixed" else 0.01)

    @property
    def adam_lr(self) -> float:
        return self.lr if self.lr is not None else (0.05 if self.init == "fixed" else 0.01)

    @property
    def pretrained_setting(self) -> bool:
        return self.init.startswith("pretrained")

    def setting(self, dataset: str) -> str:
        """The benchmark records' name for this configuration."""
        if self.objective == "poison":
            return "poison"
        source = self.source_dataset or dataset
        if self.pretrained_setting and source != dataset:
            return f"adapt-{source}-{dataset}"
        return self.init


def _steps(cfg: DDConfig, ipc: int) -> int:
    steps = cfg.steps or ipc
    if steps < 1 or ipc % steps:
        raise ConfigError(f"dd: ipc={ipc} images per class do not split into steps={steps} steps "
                          "(ipc must be a multiple of steps)")
    return steps


def kmeans(x: torch.Tensor, k: int, generator: torch.Generator, iterations: int = 30) -> torch.Tensor:
    """Lloyd's k-means on flattened rows (k-means++ seeding); returns the k centroids, ordered by
    cluster size (largest first). An empty cluster keeps its previous centroid."""
    flat = x.flatten(1)
    n = flat.shape[0]
    if k > n:
        raise ValueError(f"k-means: {k} centroids from {n} points")
    centers = flat[torch.randint(n, (1,), generator=generator)]
    for _ in range(1, k):
        d = torch.cdist(flat, centers).min(1).values ** 2
        probs = d / d.sum() if float(d.sum()) > 0 else torch.full_like(d, 1 / n)
        centers = torch.cat([centers, flat[torch.multinomial(probs.cpu(), 1, generator=generator).to(flat.device)]])
    for _ in range(iterations):
        assign = torch.cdist(flat, centers).argmin(1)
        new = torch.zeros_like(centers).index_add_(0, assign, flat)
        counts = torch.bincount(assign, minlength=k).to(flat.dtype)
        keep = counts == 0
        new = new / counts.clamp(min=1).unsqueeze(1)
        new[keep] = centers[keep]
        if torch.allclose(new, centers):
            break
        centers = new
    sizes = torch.bincount(torch.cdist(flat, centers).argmin(1), minlength=k)
    return centers[sizes.argsort(descending=True, stable=True)].view(k, *x.shape[1:])


def baseline_images(kind: str, real, ipc: int, generator: torch.Generator) -> torch.Tensor:
    """The paper's real-image baselines, ``ipc`` per class, class-major ``[C*ipc, ...]``:
    ``kmeans`` centroids of each class, or ``average``, the class's mean image repeated ``ipc`` times."""
    out = []
    for c in range(real.num_classes):
        xc = real.images[real.class_indices(c)]
        if kind == "kmeans":
            out.append(kmeans(xc, ipc, generator))
        elif kind == "average":
            out.append(xc.mean(0, keepdim=True).expand(ipc, *xc.shape[1:]))
        else:
            raise ConfigError(f"dd: unknown image initialization {kind!r}; valid: {', '.join(IMAGE_INITS)}")
    return torch.cat(out)


def make_set(cfg: DDConfig, data: LoadedDataset, ipc: int, init: str, g: torch.Generator) -> StepSet:
    steps = _steps(cfg, ipc)
    kw = dict(lrs=cfg.step_size_init, learn_lr=cfg.learn_lr)
    if init == "real":
        s = StepSet.from_real(data.train, ipc // steps, steps, cfg.epochs, g, **kw)
    elif init == "noise":
        s = StepSet.from_noise(data.spec, ipc // steps, steps, cfg.epochs, g, **kw)
    else:
        x = baseline_images(init, data.train, ipc, g).cpu()  # [C, ipc] class-major -> step-major
        c = data.spec.num_classes
        x = x.view(c, steps, ipc // steps, *x.shape[1:]).transpose(0, 1).reshape(-1, *x.shape[1:])
        s = StepSet(x, c, steps, cfg.epochs, **kw)
    s.images.requires_grad_(cfg.learn_images)
    return s


def pool_config(cfg: DDConfig, source: LoadedDataset) -> PoolConfig:
    """The pool a pretrained setting trains when none is given: ``pool_nets`` networks, the last
    ``pool_held_out`` kept for evaluation, each trained for ``pool_epochs`` epochs (default: 3 epochs
    on MNIST-sized sets, more on small ones so that every network gets about 1,400 SGD steps)."""
    batch = PoolConfig.batch_size
    epochs = cfg.pool_epochs or max(3, math.ceil(1400 * batch / len(source.train)))
    return PoolConfig(dataset=source.spec.name, model=MODELS.canonical(cfg.model), weight_init=cfg.weight_init,
                      n_nets=cfg.pool_nets, held_out=cfg.pool_held_out, epochs=epochs, batch_size=batch,
                      dataset_options=dict(source.spec.extra))


def default_pool_dir(pc: PoolConfig, spec) -> Path:
    """Where the pool for ``pc`` is cached, shared by every run that needs the same one."""
    return keyed_dir("pools", f"{pc.dataset}-{pc.model}", [dataclasses.asdict(pc), spec.cache_key()])


def open_pool(cfg: DDConfig, ctx: Context, progress: bool = True) -> Pool:
    """The pretrained pool a pretrained setting starts from, trained (and cached) on first use when
    ``cfg.pretrained`` names no folder."""
    if cfg.pretrained:
        pool = Pool(cfg.pretrained)
    else:
        source = cfg.source_dataset or ctx.spec.name
        src = ctx.data if source == ctx.spec.name else load_dataset(source, ctx.data_root)
        pc = pool_config(cfg, src)
        pool = pretrain_pool(pc, src, default_pool_dir(pc, src.spec), device=ctx.device, progress=progress)
    check_pool(pool, cfg, ctx.spec)
    return pool


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


def check_pool(pool: Pool, cfg: DDConfig, spec) -> None:
    """A pretrained pool must take ``spec``'s images and hold ``cfg.model`` networks."""
    pool.check_fits(spec)
    if MODELS.canonical(pool.config.model) != MODELS.canonical(cfg.model):
        raise ConfigError(f"dd: the pool at {pool.path} holds {pool.config.model!r} networks, not {cfg.model!r}")


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
        check_pool(Pool(cfg.pretrained), cfg, s)
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
            train = self.pool.train_indices[:1] if cfg.init == "pretrained_fixed" else self.pool.train_indices
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
        if cfg.init == "fixed":
            return [self.theta0]
        if cfg.init == "pretrained_fixed":
            return self.pretrained
        out = []
        for _ in range(cfg.n_nets):
            if cfg.init == "pretrained_random":
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
        loss = sum(evaluate_params(self.net, unrolled_sgd(self.net, th, schedule, grad_checkpoint=self.cfg.checkpoint),
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

    def eval_init(self) -> Callable[[int, str], nn.Module] | None:
        if self.cfg.init == "random":
            return None  # fresh initializations from the protocol's seeds, never seen in training
        if self.cfg.init == "fixed":
            return fixed_init(self.cfg.model, self.theta0_seed, self.ctx.spec, self.cfg.weight_init)
        assert self.pool is not None
        return PoolNets.for_setting(self.pool, self.cfg.init)

    def file_meta(self) -> dict[str, Any]:
        info: dict[str, Any] = {"setting": self.cfg.init, "model": self.cfg.model, "weight_init": self.cfg.weight_init}
        if self.cfg.init == "fixed":
            info["seed"] = self.theta0_seed
        if self.pool is not None:
            info["pool"] = str(self.pool.path.resolve())
            info["pool_dataset"] = self.pool.config.dataset
        meta: dict[str, Any] = {"net_init": info, "setting": self.cfg.setting(self.ctx.spec.name)}
        if self.cfg.objective == "poison":
            meta["poison"] = {"attack_class": self.cfg.attack_class, "target_class": self.cfg.target_class}
        return meta

    def extra_report(self, synset: Any, data: LoadedDataset, device: torch.device) -> dict[str, Any] | None:
        """Before/after numbers for the pretrained settings (adaptation, poisoning): the evaluation
        networks on the test set before and after training on the distilled steps."""
        if self.cfg.init not in ("pretrained_fixed", "pretrained_random"):
            return None
        poison = (self.cfg.attack_class, self.cfg.target_class) if self.cfg.objective == "poison" else None
        return before_after(synset, data, self.eval_init(), poison=poison, device=device)

    def state_dict(self) -> dict[str, Any]:
        return {"opt": self.opt.state_dict(), "sched": self.sched.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])


class Fixed:
    """The fixed setting's evaluation network: always the one theta_0 (``len`` 1: replaying the same
    steps on the same network twice only repeats a number)."""

    def __init__(self, model: str, seed: int, spec, weight_init: str) -> None:
        self.model, self.seed, self.spec, self.weight_init = model, seed, spec, weight_init

    def __len__(self) -> int:
        return 1

    def __call__(self, i: int, name: str) -> nn.Module:
        if MODELS.canonical(name) != MODELS.canonical(self.model):
            raise ConfigError(f"this set was distilled for one fixed initialization of {self.model!r}; it cannot be "
                              f"evaluated on {name!r} (distill with method_config.init=random for that)")
        s = self.spec
        return create_model(self.model, s.channels, s.num_classes, s.image_size, seed=self.seed,
                            weight_init=self.weight_init)


class PoolNets:
    """Evaluation networks from a pretrained pool (held-out ones for ``pretrained_random``)."""

    def __init__(self, pool: Pool, indices: list[int]) -> None:
        self.pool, self.indices = pool, list(indices)
        self.model = pool.config.model

    @classmethod
    def for_setting(cls, pool: Pool, setting: str) -> "PoolNets":
        """``pretrained_fixed``: the one training network the data were distilled for;
        ``pretrained_random``: the held-out networks, never used for distillation."""
        return cls(pool, pool.train_indices[:1] if setting == "pretrained_fixed" else pool.held_out_indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __call__(self, i: int, name: str) -> nn.Module:
        if MODELS.canonical(name) != MODELS.canonical(self.pool.config.model):
            raise ConfigError(f"this set was distilled for pretrained {self.pool.config.model!r} networks; it "
                              f"cannot be evaluated on {name!r}")
        return self.pool.network(self.indices[i])


def format_before_after(extra: dict[str, Any]) -> str:
    """One line of `before_after`'s means and stds, e.g. ``acc_before 98.50 ± 0.20, ...``."""
    return ", ".join(f"{k} {v['mean']:.2f} ± {v['std']:.2f}" for k, v in extra.items() if isinstance(v, dict))


def before_after(synset: Any, data: LoadedDataset, nets: "Fixed | PoolNets", *,
                 poison: tuple[int, int] | None = None, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Test metrics of each evaluation network before and after the distilled steps.

    Always ``acc`` (all test images); with ``poison=(K, T)`` also ``attack_success`` (percent of
    class-K test images predicted as T) and ``other_acc`` (accuracy on the other classes).
    Returns per-network lists and their mean/std, in percent.
    """
    test = data.test.to(device)
    n = len(nets) if hasattr(nets, "__len__") else 1
    with torch.no_grad():
        steps = [(x.detach().to(device), y.to(device), lr.detach()) for x, y, lr in synset.schedule()]
    rows: dict[str, list[float]] = {}
    for i in range(n):
        net = nets(i, nets.model).to(device)
        for phase in ("before", "after"):
            if phase == "after":
                replay_steps(net, steps, device)
            for k, v in _test_metrics(net, test, poison).items():
                rows.setdefault(f"{k}_{phase}", []).append(v)
    out: dict[str, Any] = {"n_networks": n}
    for k, vals in rows.items():
        t = torch.tensor(vals, dtype=torch.float64)
        out[k] = {"mean": float(t.mean()), "std": float(t.std(unbiased=False)), "values": vals}
    return out


@torch.no_grad()
def _test_metrics(net: nn.Module, test, poison: tuple[int, int] | None) -> dict[str, float]:
    net.eval()
    preds = torch.cat([net(test.images[i : i + 1000]).argmax(1) for i in range(0, len(test), 1000)])
    y = test.labels
    out = {"acc": 100 * float((preds == y).float().mean())}
    if poison is not None:
        k, t = poison
        attack, other = y == k, y != k
        out["attack_success"] = 100 * float((preds[attack] == t).float().mean())
        out["other_acc"] = 100 * float((preds[other] == y[other]).float().mean())
    net.train()
    return out


def fixed_init(model: str, seed: int, spec, weight_init: str = "default") -> Fixed:
    """Evaluation networks for the fixed setting: always the theta_0 the data were distilled for."""
    return Fixed(model, seed, spec, weight_init)


def eval_init_from_meta(meta: dict[str, Any], spec) -> Callable[[int, str], nn.Module] | None:
    """The evaluation networks a distilled file asks for (``net_init`` in its metadata)."""
    info = meta.get("net_init")
    if not info or info.get("setting") == "random":
        return None
    if info.get("setting") == "fixed":
        return fixed_init(info["model"], int(info["seed"]), spec, info.get("weight_init", "default"))
    try:
        pool = Pool(info["pool"])
    except PoolError as e:
        raise ConfigError(f"this set was distilled from the pretrained pool {info.get('pool')}, which is not "
                          f"readable here: {e}") from e
    pool.check_fits(spec)
    return PoolNets.for_setting(pool, info["setting"])


register_method(MethodEntry(
    name="dd", config=DDConfig, build=DD, iterations=2000, init="noise", eval_preset="dd", synset=make_set,
    inits=IMAGE_INITS, check=check_dd,
    description="Dataset Distillation (Wang et al. 2018): unrolled GD steps with learned step sizes",
))
