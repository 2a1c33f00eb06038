"""Train expert trajectories (MTT's buffer step) into a folder, expert by expert, resumably.

Each expert is a fresh network from its own seed (``cfg.expert_seed(i)``), trained with the shared
loop `train.train_classifier` (constant lr, no milestones) on the whole real training set, with
DSA drawn from the expert's own generator; with ``cfg.sam_rho`` set, by FTD's sharpness-aware steps
(`train.sam`) on the same batches and draws. Its parameters are recorded before training and after
every epoch, then written as one shard; nothing of an unfinished expert is ever stored, so a rerun
trains exactly the missing ones and gets the same tensors as an uninterrupted run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterable

import torch
from safetensors.torch import save
from torch import nn
from tqdm.auto import tqdm

from ..augment.training import dsa_augment
from ..data import DATASETS, load_dataset
from ..data.spec import LoadedDataset
from ..device import device_name
from ..fileio import atomic_write
from ..models import create_model
from ..paths import check_output_dir
from ..seeding import make_generator
from ..train import SharpnessAware, accuracy, real_batches, train_classifier
from ..version import versions
from .buffer import (FORMAT_VERSION, KIND, META_KEY, ExpertBuffer, Shard, check_consistent, scan, shard_name,
                     tensor_key, write_manifest)
from .config import FOLDER_FIELDS, ExpertConfig, ExpertError, config_diff


def train_experts(cfg: ExpertConfig, directory: str | Path, *, root: str | Path | None = None,
                  device: torch.device | str = "cpu", progress: bool = False, indices: Iterable[int] | None = None,
                  data: LoadedDataset | None = None) -> ExpertBuffer:
    """Train the experts numbered ``indices`` (default all ``0..n_experts-1``) not yet in ``directory``.

    Experts already there are kept (resume), so disjoint ``indices`` may be trained by separate
    processes into one folder. ``data`` is the dataset as `load_dataset` returns it (unwhitened:
    ``cfg.zca`` is applied here); by default it is loaded from ``root``.
    """
    directory = Path(directory)
    wanted, stored = requested(cfg, directory, indices)
    done = {s.index for s in stored}
    todo = [i for i in wanted if i not in done]
    if todo:
        check_output_dir(directory, "expert folder")  # before any expert is trained
        data = _prepare_data(cfg, root, data)
        train, test = data.train.to(device), data.test.to(device)
        augment = dsa_augment(data.spec, cfg.dsa_strategy) if cfg.augment == "dsa" else None
        bar = tqdm(todo, desc=f"experts {cfg.model} on {cfg.dataset}", disable=not progress)
        for i in bar:
            if (directory / shard_name(i)).exists():  # finished meanwhile by another process
                continue
            tensors, meta = _train_one(cfg, i, data, train, test, augment, device)
            blob = save(tensors, metadata={META_KEY: json.dumps(meta)})
            atomic_write(directory / shard_name(i), lambda p: p.write_bytes(blob))
            write_manifest(directory)
            bar.set_postfix(test_acc=f"{meta['test_acc'][-1]:.1f}%")
    elif stored and not (directory / "manifest.json").exists():
        write_manifest(directory)
    return ExpertBuffer.open(directory)


def requested(cfg: ExpertConfig, directory: Path, indices: Iterable[int] | None) -> tuple[list[int], list[Shard]]:
    """The expert numbers ``indices`` asks for (default all), sorted, and the experts already in
    ``directory``; ExpertError for a number out of range or a folder of experts trained differently."""
    wanted = sorted(set(range(cfg.n_experts) if indices is None else (int(i) for i in indices)))
    bad = [i for i in wanted if not 0 <= i < cfg.n_experts]
    if bad:
        shown = ", ".join(map(str, bad[:5])) + (f" ... ({len(bad)} in all)" if len(bad) > 5 else "")
        raise ExpertError(f"expert indices {shown} are out of range 0..{cfg.n_experts - 1} (n_experts={cfg.n_experts})")
    stored = scan(directory)
    if stored:
        diff = config_diff(check_consistent(directory, stored), cfg, FOLDER_FIELDS)
        if diff:
            raise ExpertError(f"{directory} holds experts trained differently ({'; '.join(diff)}); choose another "
                              "folder, or the stored settings to add experts to it")
    return wanted, stored


def expert_shard(cfg: ExpertConfig | dict[str, Any], index: int, *, root: str | Path | None = None,
                 device: torch.device | str = "cpu") -> bytes:
    """Expert ``index`` of ``cfg``, trained here, as the bytes of its shard: the same bytes
    `train_experts` writes for it (an executor's task: the driver writes the file)."""
    cfg = cfg if isinstance(cfg, ExpertConfig) else ExpertConfig.from_dict(cfg)
    if not 0 <= index < cfg.n_experts:
        raise ExpertError(f"expert index {index} is out of range 0..{cfg.n_experts - 1}")
    data = _prepare_data(cfg, root, None)
    train, test = data.train.to(device), data.test.to(device)
    augment = dsa_augment(data.spec, cfg.dsa_strategy) if cfg.augment == "dsa" else None
    tensors, meta = _train_one(cfg, index, data, train, test, augment, device)
    return save(tensors, metadata={META_KEY: json.dumps(meta)})


def _prepare_data(cfg: ExpertConfig, root: str | Path | None, data: LoadedDataset | None) -> LoadedDataset:
    if data is None:
        data = load_dataset(cfg.dataset, root, **cfg.dataset_options)
    else:
        ref = data.spec.ref
        given = ref.load_options()
        options_differ = bool(given) and any(given.get(k) != v for k, v in cfg.dataset_options.items())
        if DATASETS.canonical(data.spec.name) != cfg.dataset or options_differ:
            raise ExpertError(f"the data passed are {data.spec.name} {given}, the config asks for "
                              f"{cfg.dataset} {cfg.dataset_options}")
        if ref.zca is not None:
            raise ExpertError("the data passed are ZCA-whitened already; pass them as load_dataset returns them "
                              "and set ExpertConfig.zca")
    if cfg.zca is not None:
        from ..data.zca import whiten_dataset

        data = whiten_dataset(data, cfg.zca)
    return data


def _snapshot(model: nn.Module, epoch: int, into: dict[str, torch.Tensor]) -> None:
    """Copy the parameters to the CPU in contiguous layout (the loop trains in channels_last)."""
    for name, p in model.named_parameters():
        into[tensor_key(epoch, name)] = p.detach().to("cpu").clone(memory_format=torch.contiguous_format)


def _train_one(cfg: ExpertConfig, i: int, data: LoadedDataset, train, test, augment,
               device: torch.device | str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    start = time.perf_counter()
    seed, s = cfg.expert_seed(i), data.spec
    net = create_model(cfg.model, s.channels, s.num_classes, s.image_size, seed=seed)
    tensors: dict[str, torch.Tensor] = {}
    accs: list[float] = []

    def record(epoch: int, model: nn.Module) -> None:
        _snapshot(model, epoch, tensors)
        accs.append(round(100 * accuracy(model, test, device=device), 2))

    record(0, net)
    sam = None if cfg.sam_rho is None else SharpnessAware(cfg.sam_rho, cfg.sam_alpha, cfg.sam_adaptive)
    train_classifier(net, real_batches(train), epochs=cfg.epochs, lr=cfg.lr, momentum=cfg.momentum,
                     weight_decay=cfg.weight_decay, milestones=(), batch_size=cfg.batch_size,
                     generator=make_generator(seed, "expert-train"), augment=augment, device=device,
                     on_epoch_end=lambda epoch, model: record(epoch + 1, model), sam=sam)
    meta = {"format_version": FORMAT_VERSION, "kind": KIND, "config": cfg.to_dict(), "expert": i, "seed": seed,
            "epochs": cfg.epochs, "param_names": [n for n, _ in net.named_parameters()],
            "spec": s.to_dict(), "test_acc": accs, "seconds": round(time.perf_counter() - start, 3),
            "device": device_name(torch.device(device)), **versions()}
    return tensors, meta
