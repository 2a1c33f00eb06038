"""Coreset baselines: real images selected per class, evaluated like any distilled set.

The baselines of the dataset-condensation tables (Zhao, Mopuri & Bilen, "Dataset Condensation with
Gradient Matching", ICLR 2021, Table 1), each selecting ``ipc`` real training images per class:

``random``: ``ipc`` distinct random training images per class, drawn from the run's seed.

``herding``: Welling, "Herding Dynamical Weights to Learn", ICML 2009, in the greedy form the
condensation papers use (after Rebuffi et al., iCaRL, CVPR 2017 and Castro et al., ECCV 2018):
with class features ``f_i`` and class mean ``mu``, pick in turn

    s_k = argmin_{i not in S} || mu - (f_i + sum_{j in S} f_j) / k ||,

so the running mean of the selected features stays as close as possible to the class mean; the
first pick is the image whose feature is closest to ``mu``. Features are used as they come (iCaRL
L2-normalizes them; the condensation baselines do not say, and raw features keep ``pixels`` exact).

``kcenter``: the greedy 2-approximation of the k-center problem of Sener & Savarese, "Active
Learning for Convolutional Neural Networks: A Core-Set Approach", ICLR 2018 (their Alg. 1):

    s_k = argmax_{i not in S} min_{j in S} || f_i - f_j ||.

The paper starts from a labelled pool; with none, we start each class from the image closest to
the class mean feature (a deterministic, central first center; a random start would make the
selection depend on one draw more).

Features (``CoresetConfig.features``) are those of a network trained on the real training set
(``trained``, the condensation papers' choice), of a randomly initialized network (``random``) or
the flattened normalized pixels (``pixels``). The selection is the set's initialization (the
method's ``synset`` factory); the method itself has no iterations.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file

from ..cache import keyed_dir
from ..config import ConfigError
from ..data.spec import LoadedDataset
from ..models import create_model
from ..seeding import fork
from ..synset import PixelSet
from ..fileio import atomic_write
from ..train.loop import real_batches, train_classifier
from .base import MethodEntry, Selected, config_model, register_method

Embed = Callable[[torch.Tensor], torch.Tensor]  # normalized images [n, C, H, W] -> features [n, D]
Selector = Callable[[torch.Tensor, int], torch.Tensor]  # (features [n, D], k) -> indices [k]


@dataclass(frozen=True)
class RandomConfig:
    pass


@dataclass(frozen=True)
class CoresetConfig:
    """Feature space of a feature-based coreset selection (``herding``, ``kcenter``).

    ``features``: ``trained`` (``model`` trained on the real training set with the shared SGD loop,
    momentum 0.9, weight decay 5e-4, for ``train_epochs`` epochs at ``train_lr``), ``random``
    (``model`` freshly initialized, never trained) or ``pixels`` (flattened normalized images;
    ``model`` is then unused). The network's seed and the training order are drawn from the run's
    seed; ``train_epochs=0`` leaves the network untrained. ``batch_size`` is both the training batch
    and the feature-extraction chunk (features are extracted without autograd, in eval mode).
    """

    features: str = "trained"
    model: str = "convnet"
    train_epochs: int = 1
    train_lr: float = 0.01
    batch_size: int = 256

    def __post_init__(self) -> None:
        if self.features not in FEATURES:
            raise ConfigError(f"unknown features {self.features!r}; valid features: {', '.join(sorted(FEATURES))}")
        if self.train_epochs < 0:
            raise ConfigError(f"train_epochs must be >= 0, got {self.train_epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.train_lr > 0:
            raise ConfigError(f"train_lr must be > 0, got {self.train_lr}")


# ------------------------------------------------------------------------------------ selection rules
def herding(features: torch.Tensor, k: int) -> torch.Tensor:
    """Greedy herding: ``k`` distinct row indices whose running mean tracks the mean of ``features``."""
    _check_k(features, k)
    mu = features.mean(0)
    acc = torch.zeros_like(mu)
    taken = torch.zeros(features.shape[0], dtype=torch.bool, device=features.device)
    picks = []
    for step in range(1, k + 1):
        dist = torch.linalg.vector_norm((features + acc) / step - mu, dim=1)
        i = int(dist.masked_fill(taken, float("inf")).argmin())
        picks.append(i)
        taken[i] = True
        acc = acc + features[i]
    return torch.tensor(picks, dtype=torch.long)


def k_center(features: torch.Tensor, k: int) -> torch.Tensor:
    """Greedy k-center (farthest point): ``k`` distinct row indices, the first closest to the mean."""
    _check_k(features, k)
    first = int(torch.linalg.vector_norm(features - features.mean(0), dim=1).argmin())
    nearest = torch.linalg.vector_norm(features - features[first], dim=1)  # distance to the closest center
    taken = torch.zeros(features.shape[0], dtype=torch.bool, device=features.device)
    taken[first] = True
    picks = [first]
    for _ in range(k - 1):
        i = int(nearest.masked_fill(taken, float("-inf")).argmax())
        picks.append(i)
        taken[i] = True
        nearest = torch.minimum(nearest, torch.linalg.vector_norm(features - features[i], dim=1))
    return torch.tensor(picks, dtype=torch.long)


def _check_k(features: torch.Tensor, k: int) -> None:
    if not 1 <= k <= features.shape[0]:
        raise ValueError(f"cannot select {k} of {features.shape[0]} points")


SELECTORS: dict[str, Selector] = {"herding": herding, "kcenter": k_center}


# ------------------------------------------------------------------------------------ feature spaces
def _pixels(cfg: CoresetConfig, data: LoadedDataset, generator: torch.Generator) -> Embed:
    return lambda x: x.flatten(1)


def _network(cfg: CoresetConfig, data: LoadedDataset, generator: torch.Generator, *, train: bool) -> Embed:
    spec, device = data.spec, data.train.images.device
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    net = create_model(cfg.model, spec.channels, spec.num_classes, spec.image_size, seed=seed).to(device)
    if train and cfg.train_epochs > 0:
        order = fork(generator)
        path = _feature_cache(cfg, data, seed, order.initial_seed())
        if path.is_file():  # the same network, trained earlier for another size or rule: reuse it
            net.load_state_dict(load_file(str(path), device=str(device)))
        else:
            train_classifier(net, real_batches(data.train), epochs=cfg.train_epochs, lr=cfg.train_lr,
                             batch_size=cfg.batch_size, generator=order, device=device, desc="coreset features")
            state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
            atomic_write(path, lambda p: save_file(state, str(p)))
    net.eval()

    @torch.no_grad()
    def embed(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([net.forward_features(x[i : i + cfg.batch_size]).flatten(1).float()
                          for i in range(0, x.shape[0], cfg.batch_size)])

    return embed


def _feature_cache(cfg: CoresetConfig, data: LoadedDataset, net_seed: int, order_seed: int) -> Path:
    """Where the trained feature network of this (data, config, seeds) is kept: herding and k-center
    at every size draw the same network from the same run seed, so it is trained once. The key holds
    a checksum of the training tensors, so other data never hits it."""
    train = data.train
    key = {"spec": data.spec.cache_key(), "n": len(train), "images_sum": float(train.images.double().sum()),
           "labels_sum": int(train.labels.sum()), "model": cfg.model, "epochs": cfg.train_epochs,
           "lr": cfg.train_lr, "batch_size": cfg.batch_size, "net_seed": net_seed, "order_seed": order_seed,
           "device": train.images.device.type, "torch": torch.__version__}
    return keyed_dir("coreset-features", f"{data.spec.name}-{cfg.model}", key).with_suffix(".safetensors")


FEATURES: dict[str, Callable[[CoresetConfig, LoadedDataset, torch.Generator], Embed]] = {
    "trained": partial(_network, train=True),
    "random": partial(_network, train=False),
    "pixels": _pixels,
}


# ------------------------------------------------------------------------------------ the set
def select_indices(cfg: CoresetConfig, data: LoadedDataset, ipc: int, generator: torch.Generator,
                   selector: Selector) -> torch.Tensor:
    """Indices into ``data.train`` of ``ipc`` images per class, class by class, in selection order."""
    train = data.train
    short = [c for c in range(train.num_classes) if train.class_count(c) < ipc]
    if short:
        n_min = min(train.class_count(c) for c in range(train.num_classes))
        raise ConfigError(f"classes {short} have fewer than ipc={ipc} training images; "
                          f"a coreset can select at most {n_min} per class")
    embed = FEATURES[cfg.features](cfg, data, generator)
    out = []
    for c in range(train.num_classes):
        idx = train.class_indices(c)
        picks = selector(embed(train.images[idx]), ipc)
        out.append(idx[picks.to(idx.device)])
    return torch.cat(out)


def select_random(cfg: RandomConfig, data: LoadedDataset, ipc: int, init: str,
                  generator: torch.Generator) -> Selected:
    """``random``'s selection: ``ipc`` real images per class drawn uniformly (``init="noise"``: a
    set of noise images, the no-information floor)."""
    synset = (PixelSet.from_real(data.train, ipc, generator) if init == "real"
              else PixelSet.from_noise(data.spec, ipc, generator))
    return Selected(synset, {"selection": {"method": "random"}})


def select_coreset(method: str, cfg: CoresetConfig, data: LoadedDataset, ipc: int, init: str,
                   generator: torch.Generator) -> Selected:
    """A feature-based coreset's selection: a `PixelSet` of the selected real images, and the rule and
    the feature space actually used (the file's ``selection``)."""
    if init != "real":
        raise ConfigError(f"{method} selects real images; init must be 'real', got {init!r}")
    idx = select_indices(cfg, data, ipc, generator, SELECTORS[method])
    train = data.train
    meta: dict[str, Any] = {"method": method, "features": cfg.features}
    if cfg.features != "pixels":
        meta["model"] = cfg.model
    if cfg.features == "trained":
        meta.update(train_epochs=cfg.train_epochs, train_lr=cfg.train_lr)
    return Selected(PixelSet(train.images[idx].cpu(), train.labels[idx].cpu(), train.num_classes), {"selection": meta})


register_method(MethodEntry(
    name="random", config=RandomConfig, select=select_random,
    description="random real images per class (baseline)",
))
register_method(MethodEntry(
    name="herding", config=CoresetConfig, select=partial(select_coreset, "herding"),
    image_inits=("real",), network=config_model,
    description="herding selection of real images per class (Welling, ICML 2009; baseline)",
))
register_method(MethodEntry(
    name="kcenter", config=CoresetConfig, select=partial(select_coreset, "kcenter"),
    image_inits=("real",), network=config_model,
    description="greedy k-center selection of real images per class (Sener & Savarese, ICLR 2018; baseline)",
), "k_center")
