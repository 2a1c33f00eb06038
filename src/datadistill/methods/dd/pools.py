"""Pools of pretrained networks: the starting points of DD's pretrained settings and its
poisoning and domain-adaptation objectives (Wang et al. 2018, Sections 3.5-3.6).

A pool is a folder with ``manifest.json`` and one ``net-NNN.safetensors`` per network, each trained
on the real training set with the shared loop (`train.train_classifier`) from its own seed.
Networks are written one by one (atomically) and the manifest after each, so an interrupted
``datadistill pretrain`` resumes where it stopped. The last ``held_out`` networks are never used
for distillation: evaluation of the pretrained settings starts from them (`PoolNets`).

This module also chooses the pool a run uses (`open_pool`: a given folder, or one trained and
cached per configuration) and is ``datadistill pretrain``'s implementation (`pretrain`, the DD
entry's ``pretrain`` hook, so that the CLI reaches it through the method registry).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from ...cache import keyed_dir
from ...config import ConfigError
from ...data import load_dataset
from ...data.spec import LoadedDataset
from ...device import pick_device
from ...fileio import atomic_write, atomic_write_text
from ...models import MODELS, WEIGHT_INITS, create_model
from ...paths import check_output_dir
from ...seeding import derive_seed, make_generator
from ...train import accuracy, real_batches, train_classifier
from ..base import Context

if TYPE_CHECKING:
    from .method import DDConfig

MANIFEST = "manifest.json"


class PoolError(ConfigError):
    """A pool folder is missing, incomplete or does not fit the data it is used with (a
    `ConfigError`: the command names a pool that cannot be used)."""


@dataclass(frozen=True)
class PoolConfig:
    """How the networks of a pool are trained (the shared loop's SGD, momentum and weight decay)."""

    dataset: str
    model: str = "lenet"
    weight_init: str = "xavier"
    n_nets: int = 30
    held_out: int = 20
    epochs: int = 3
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    seed: int = 0
    dataset_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.n_nets < 1 or not 0 <= self.held_out < self.n_nets:
            raise PoolError(f"a pool needs n_nets >= 1 and 0 <= held_out < n_nets, got n_nets={self.n_nets}, "
                            f"held_out={self.held_out}")
        bad = [f"{name} must be {rule}, got {value!r}" for name, value, ok, rule in (
            ("epochs", self.epochs, self.epochs >= 1, ">= 1"),
            ("lr", self.lr, self.lr > 0, "> 0"),
            ("momentum", self.momentum, 0 <= self.momentum < 1, "in [0, 1)"),
            ("weight_decay", self.weight_decay, self.weight_decay >= 0, ">= 0"),
            ("batch_size", self.batch_size, self.batch_size >= 1, ">= 1"),
        ) if not ok]
        if bad:
            raise PoolError("; ".join(bad))

    def net_seed(self, i: int) -> int:
        return derive_seed(self.seed, "pool-net", i)


def _spec_dict(data: LoadedDataset) -> dict[str, Any]:
    s = data.spec
    return {"name": s.name, "num_classes": s.num_classes, "channels": s.channels,
            "image_size": list(s.image_size)}


def pretrain_pool(cfg: PoolConfig, data: LoadedDataset, out: str | Path, *, device: torch.device | str = "cpu",
                  progress: bool = True) -> "Pool":
    """Train (or finish training) the pool in ``out``; networks already on disk are kept."""
    out = Path(out)
    manifest_path = out / MANIFEST
    manifest: dict[str, Any] = {"config": asdict(cfg), "spec": _spec_dict(data), "nets": []}
    if manifest_path.exists():
        old = _read_manifest(manifest_path)
        if old.get("config") != manifest["config"] or old.get("spec") != manifest["spec"]:
            raise PoolError(f"{out} holds a pool trained with a different configuration; choose another folder "
                            f"(its config: {old.get('config')})")
        manifest["nets"] = [n for n in old.get("nets", []) if (out / n["file"]).exists()]
    done = len(manifest["nets"])
    if done < cfg.n_nets or not manifest_path.exists():
        check_output_dir(out, "pool folder")  # before the first network is trained
    s = data.spec
    for i in tqdm(range(done, cfg.n_nets), desc=f"pretrain {cfg.model} on {s.name}", disable=not progress,
                  initial=done, total=cfg.n_nets):
        seed = cfg.net_seed(i)
        net = create_model(cfg.model, s.channels, s.num_classes, s.image_size, seed=seed,
                           weight_init=cfg.weight_init)
        train_classifier(net, real_batches(data.train), epochs=cfg.epochs, lr=cfg.lr, momentum=cfg.momentum,
                         weight_decay=cfg.weight_decay, milestones=(), batch_size=cfg.batch_size,
                         generator=make_generator(seed, "pretrain"), device=device)
        acc = accuracy(net, data.test, device=device)
        name = f"net-{i:03d}.safetensors"
        tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
        atomic_write(out / name, lambda p: save_file(tensors, str(p)))
        manifest["nets"].append({"file": name, "seed": seed, "test_acc": round(100 * acc, 2)})
        atomic_write_text(manifest_path, json.dumps(manifest, indent=1))
    if not manifest_path.exists():
        atomic_write_text(manifest_path, json.dumps(manifest, indent=1))
    return Pool(out)


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise PoolError(f"{path} cannot be read as a pool manifest ({e}); the pool is damaged") from e
    if not isinstance(manifest, dict):
        raise PoolError(f"{path} is not a pool manifest; the pool is damaged")
    return manifest


class Pool:
    """A trained pool on disk: ``network(i)``, the training and held-out index lists."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        mp = self.path / MANIFEST
        if not mp.exists():
            raise PoolError(f"no pretrained pool at {self.path} (no {MANIFEST}); create one with "
                            "`datadistill pretrain --dataset D --out FOLDER`")
        self.manifest = _read_manifest(mp)
        try:
            self.config = PoolConfig(**self.manifest["config"])
            self.nets: list[dict[str, Any]] = list(self.manifest["nets"])
        except (KeyError, TypeError) as e:
            raise PoolError(f"{mp} is not a pool manifest ({type(e).__name__}: {e}); the pool is damaged") from e
        if len(self.nets) < self.config.n_nets:
            raise PoolError(f"the pool at {self.path} is incomplete ({len(self.nets)} of {self.config.n_nets} "
                            "networks); finish it with the same `datadistill pretrain` command")

    def __len__(self) -> int:
        return len(self.nets)

    @property
    def train_indices(self) -> list[int]:
        return list(range(len(self) - self.config.held_out))

    @property
    def held_out_indices(self) -> list[int]:
        return list(range(len(self) - self.config.held_out, len(self)))

    def check_fits(self, spec: Any) -> None:
        """The pool's networks must take ``spec``'s images and predict its classes."""
        p = self.manifest["spec"]
        mine = (p["num_classes"], p["channels"], tuple(p["image_size"]))
        theirs = (spec.num_classes, spec.channels, tuple(spec.image_size))
        if mine != theirs:
            raise PoolError(f"the pool at {self.path} was trained on {p['name']} (classes, channels, size = {mine}); "
                            f"it cannot start networks for {spec.name} {theirs}")

    def network(self, i: int) -> nn.Module:
        """A fresh module holding the i-th network's trained weights (CPU)."""
        c, p = self.config, self.manifest["spec"]
        net = create_model(c.model, p["channels"], p["num_classes"], tuple(p["image_size"]), seed=0)
        net.load_state_dict(load_file(str(self.path / self.nets[i]["file"])))
        return net

    def accuracies(self, indices: list[int]) -> list[float]:
        return [float(self.nets[i]["test_acc"]) for i in indices]


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


def pool_config(cfg: "DDConfig", source: LoadedDataset) -> PoolConfig:
    """The pool a pretrained setting trains when none is given: ``pool_nets`` networks, the last
    ``pool_held_out`` kept for evaluation, each trained for ``pool_epochs`` epochs (default: 3 epochs
    on MNIST-sized sets, more on small ones so that every network gets about 1,400 SGD steps)."""
    batch = PoolConfig.batch_size
    epochs = cfg.pool_epochs or max(3, math.ceil(1400 * batch / len(source.train)))
    return PoolConfig(dataset=source.spec.name, model=MODELS.canonical(cfg.model), weight_init=cfg.weight_init,
                      n_nets=cfg.pool_nets, held_out=cfg.pool_held_out, epochs=epochs, batch_size=batch,
                      dataset_options=source.spec.ref.load_options())


def default_pool_dir(pc: PoolConfig, spec) -> Path:
    """Where the pool for ``pc`` is cached, shared by every run that needs the same one."""
    return keyed_dir("pools", f"{pc.dataset}-{pc.model}", [asdict(pc), spec.cache_key()])


def open_pool(cfg: "DDConfig", ctx: Context, progress: bool = True) -> Pool:
    """The pretrained pool a pretrained setting starts from, trained (and cached) on first use when
    ``cfg.pretrained`` names no folder."""
    if cfg.pretrained:
        pool = Pool(cfg.pretrained)
    else:
        source = cfg.source_dataset or ctx.spec.name
        src = ctx.data if source == ctx.spec.name else load_dataset(source, ctx.data_root)
        pc = pool_config(cfg, src)
        pool = pretrain_pool(pc, src, default_pool_dir(pc, src.spec), device=ctx.device, progress=progress)
    check_pool(pool, cfg.model, ctx.spec)
    return pool


def check_pool(pool: Pool, model: str, spec) -> None:
    """A pretrained pool must take ``spec``'s images and hold ``model`` networks."""
    pool.check_fits(spec)
    if MODELS.canonical(pool.config.model) != MODELS.canonical(model):
        raise ConfigError(f"dd: the pool at {pool.path} holds {pool.config.model!r} networks, not {model!r}")


def pretrain(*, dataset: str, out: str | Path, model: str = "lenet", weight_init: str = "xavier", nets: int = 30,
             held_out: int = 20, epochs: int = 3, lr: float = 0.01, batch_size: int = 128, seed: int = 0,
             root: str | None = None, device: str = "auto", progress: bool = True) -> str:
    """``datadistill pretrain``: train (or finish) the pool in ``out``; returns the summary line."""
    WEIGHT_INITS.get(weight_init)
    cfg = PoolConfig(dataset=dataset, model=MODELS.canonical(model), weight_init=weight_init, n_nets=nets,
                     held_out=held_out, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
    data = load_dataset(dataset, root)
    pool = pretrain_pool(cfg, data, out, device=pick_device(device), progress=progress)
    accs = pool.accuracies(list(range(len(pool))))
    held = pool.held_out_indices
    return (f"pool {out}: {len(pool)} {cfg.model} networks on {dataset}, test accuracy "
            f"{sum(accs) / len(accs):.2f}% (min {min(accs):.2f}); "
            + (f"networks {held[0]}..{held[-1]} are held out for evaluation" if held else "none is held out"))
