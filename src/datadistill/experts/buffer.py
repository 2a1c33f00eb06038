"""Expert trajectories on disk: one self-describing safetensors shard per expert, read lazily.

Shard ``expert-NNNNN.safetensors`` holds tensor ``e{epoch:03d}/{name}`` for every epoch 0..E and every
parameter ``name`` of ``model.named_parameters()`` (contiguous, float32 as trained; buffers such as
BatchNorm running statistics are not stored, as in MTT). Its metadata (header key ``datadistill``)
holds the config, the expert's index and seed, the dataset spec, the test accuracy at every stored
epoch, the training seconds and the library versions. Shards are written atomically, so a folder
only ever holds finished experts; ``manifest.json`` is a summary regenerated from the shards after
each expert and never trusted by `ExpertBuffer.open`, so several processes (or machines sharing a
folder) can fill one buffer.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from ..fileio import atomic_write_text, safetensors_header
from .config import FOLDER_FIELDS, ExpertConfig, ExpertError, config_diff

FORMAT_VERSION = 1
META_KEY = "datadistill"
KIND = "expert_trajectory"
MANIFEST = "manifest.json"
SHARD_RE = re.compile(r"^expert-(\d{5})\.safetensors$")


def shard_name(i: int) -> str:
    return f"expert-{i:05d}.safetensors"


def tensor_key(epoch: int, name: str) -> str:
    return f"e{epoch:03d}/{name}"


@dataclass(frozen=True)
class Shard:
    """One stored expert: its file and metadata (read from the header only)."""

    index: int
    path: Path
    meta: dict[str, Any]

    @property
    def config(self) -> ExpertConfig:
        return ExpertConfig.from_dict(self.meta["config"])


def read_shard(path: Path) -> Shard:
    try:
        header = safetensors_header(path, META_KEY)
    except (OSError, ValueError) as e:
        raise ExpertError(f"{path} is not a readable safetensors file ({e}); delete it and train that expert "
                          "again") from e
    if header is None:
        raise ExpertError(f"{path} has no datadistill metadata: not an expert trajectory")
    meta = json.loads(header)
    if meta.get("kind") != KIND or meta.get("format_version") != FORMAT_VERSION:
        raise ExpertError(f"{path} is not an expert trajectory of format {FORMAT_VERSION} "
                          f"(kind {meta.get('kind')!r}, format {meta.get('format_version')!r})")
    return Shard(int(meta["expert"]), path, meta)


def scan(directory: Path) -> list[Shard]:
    """The finished experts in ``directory``, by index (half-written temporary files are ignored)."""
    if not directory.is_dir():
        return []
    shards = [read_shard(p) for p in sorted(directory.iterdir()) if SHARD_RE.match(p.name)]
    for s in shards:
        if shard_name(s.index) != s.path.name:
            raise ExpertError(f"{s.path} holds expert {s.index}; it was renamed, name it {shard_name(s.index)}")
    return sorted(shards, key=lambda s: s.index)


def check_consistent(directory: Path, shards: list[Shard]) -> ExpertConfig:
    """All shards must come from one configuration (up to ``n_experts``); returns it, with
    ``n_experts`` the largest any of them was trained for."""
    first = shards[0].config
    for s in shards[1:]:
        diff = config_diff(first, s.config, FOLDER_FIELDS)
        if diff:
            raise ExpertError(f"{directory} mixes experts trained differently ({shards[0].path.name} vs "
                              f"{s.path.name}: {'; '.join(diff)}); keep one kind per folder")
    return replace(first, n_experts=max(s.config.n_experts for s in shards))


def write_manifest(directory: Path) -> None:
    """Regenerate ``manifest.json`` from the shards (a human-readable summary; atomic)."""
    shards = scan(directory)
    if not shards:
        return
    buf = ExpertBuffer(directory, shards)
    atomic_write_text(directory / MANIFEST, json.dumps(buf.summary(), indent=1))


class ExpertBuffer:
    """Finished expert trajectories in a folder: ``params(expert, epoch)`` reads one epoch lazily.

    ``expert`` is a position ``0 <= expert < len(buffer)`` among the finished experts; ``indices``
    maps it to the expert's number (they coincide once a buffer is complete).
    """

    def __init__(self, directory: Path, shards: list[Shard]) -> None:
        self.directory = Path(directory)
        self.shards = shards
        self.config = check_consistent(self.directory, shards)
        self.epochs = self.config.epochs
        self.indices = [s.index for s in shards]

    @classmethod
    def open(cls, directory: str | Path, expect: ExpertConfig | None = None) -> "ExpertBuffer":
        """The experts in ``directory``; with ``expect``, ExpertError unless they were trained the same
        way (every trajectory-defining field; not ``n_experts``, ``epochs`` or ``seed``)."""
        directory = Path(directory)
        shards = scan(directory)
        if not shards:
            raise ExpertError(f"no expert trajectories in {directory}; train them with `datadistill experts "
                              f"--dataset D --model M --out {directory}`")
        buf = cls(directory, shards)
        if expect is not None:
            diff = config_diff(buf.config, expect)
            if diff:
                raise ExpertError(f"the expert trajectories in {directory} were trained differently from what is "
                                  f"requested ({'; '.join(diff)}); train matching ones into another folder")
        return buf

    def __len__(self) -> int:
        return len(self.shards)

    @property
    def complete(self) -> bool:
        return self.indices == list(range(self.config.n_experts))

    @property
    def param_names(self) -> list[str]:
        return list(self.shards[0].meta["param_names"])

    def params(self, expert: int, epoch: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """Parameters of the ``expert``-th finished expert after ``epoch`` epochs (0: its initialization),
        keyed by ``named_parameters()`` names; only that epoch's tensors are read from disk."""
        if not 0 <= expert < len(self):
            raise ExpertError(f"expert {expert} out of range: {self.directory} holds {len(self)} finished experts")
        if not 0 <= epoch <= self.epochs:
            raise ExpertError(f"epoch {epoch} out of range: the experts store epochs 0..{self.epochs}")
        shard = self.shards[expert]
        with safe_open(str(shard.path), framework="pt") as f:
            return {name: f.get_tensor(tensor_key(epoch, name)).to(device) for name in shard.meta["param_names"]}

    def check_fits(self, *, dataset: str, model: str, zca: float | None, need_epochs: int) -> None:
        """ExpertError listing every way these experts cannot serve a run on ``dataset`` with ``model``
        and ``zca`` whitening that needs ``need_epochs`` epochs of each trajectory."""
        from ..data import DATASETS
        from ..models import MODELS

        c, problems = self.config, []
        if DATASETS.canonical(dataset) != c.dataset:
            problems.append(f"dataset: stored {c.dataset!r} vs requested {dataset!r}")
        if MODELS.canonical(model) != c.model:
            problems.append(f"model: stored {c.model!r} vs requested {model!r}")
        if (None if zca is None else float(zca)) != c.zca:  # the run and its experts must see the same data
            fix = (f"train experts with --zca {zca:g}" if zca is not None else "train experts without --zca")
            run = f"run with zca={c.zca:g}" if c.zca is not None else "run with zca=null (no whitening)"
            problems.append(f"zca: stored {c.zca!r} vs requested {zca!r}, the experts were trained on "
                            f"{'un-whitened' if c.zca is None else 'ZCA-whitened'} data ({fix}, or {run})")
        if need_epochs > self.epochs:
            problems.append(f"epochs: stored {self.epochs} per expert, {need_epochs} needed (train experts with "
                            f"--epochs {need_epochs} or more into another folder)")
        if problems:
            raise ExpertError(f"the expert trajectories in {self.directory} do not fit: {'; '.join(problems)}")

    def summary(self) -> dict[str, Any]:
        """Config, per-expert seed, final test accuracy (%) and seconds, and their totals."""
        experts = [{"index": s.index, "file": s.path.name, "seed": s.meta["seed"],
                    "final_test_acc": s.meta["test_acc"][-1], "test_acc": s.meta["test_acc"],
                    "seconds": s.meta["seconds"], "device": s.meta.get("device")} for s in self.shards]
        accs = [e["final_test_acc"] for e in experts]
        return {"format_version": FORMAT_VERSION, "directory": str(self.directory), "config": self.config.to_dict(),
                "epochs": self.epochs, "n_experts": self.config.n_experts, "finished": len(self),
                "complete": self.complete, "mean_final_test_acc": round(sum(accs) / len(accs), 2),
                "total_seconds": round(sum(e["seconds"] for e in experts), 2),
                "param_names": self.param_names, "experts": experts}
