"""Trained teachers (classifiers on the real data) for soft labels. STUB in the ``rded`` branch.

This is a minimal stand-in for the interface of issue 19 (``/work/soft-interface.md``) so that RDED
can be written and tested before the lead's ``soft labels:`` commit lands on main; on the merge,
main's module replaces this file entirely.

A teacher file is a ``.safetensors`` of the network's state with JSON metadata: the registry name
of the model, the dataset spec and ``meta`` (test accuracy, training settings).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .data.spec import DatasetSpec, LoadedDataset
from .fileio import atomic_write
from .models import create_model
from .seeding import make_generator
from .train.loop import accuracy, real_batches, train_classifier


class TeacherError(ValueError):
    """A teacher file that is missing, unreadable or does not fit."""


@dataclass
class Teacher:
    net: nn.Module
    model: str
    spec: DatasetSpec
    meta: dict[str, Any] = field(default_factory=dict)
    chunk: int = 512

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        self.net.eval()
        dev = next(self.net.parameters()).device
        return torch.cat([self.net(x[i : i + self.chunk].to(dev)).float() for i in range(0, x.shape[0], self.chunk)])

    def probs(self, x: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        return torch.softmax(self.logits(x) / temperature, dim=1)


def train_teacher(data: LoadedDataset, model: str = "convnet", epochs: int = 50, seed: int = 0,
                  device: torch.device | str = "cpu", lr: float = 0.01, batch_size: int = 256) -> Teacher:
    spec = data.spec
    net = create_model(model, spec.channels, spec.num_classes, spec.image_size, seed=seed).to(device)
    train_classifier(net, real_batches(data.train), epochs=epochs, lr=lr, batch_size=batch_size,
                     milestones=(epochs // 2,), generator=make_generator(seed, "teacher"), device=device)
    acc = accuracy(net, data.test, device=device)
    net.eval()
    return Teacher(net, model, spec, {"test_accuracy": acc, "epochs": epochs, "lr": lr, "seed": seed})


def save_teacher(path: str | Path, teacher: Teacher) -> Path:
    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in teacher.net.state_dict().items()}
    header = {"model": teacher.model, "spec": json.dumps(teacher.spec.to_dict()), "meta": json.dumps(teacher.meta)}
    atomic_write(path, lambda p: save_file(state, str(p), metadata=header))
    return path


def load_teacher(path: str | Path, device: torch.device | str = "cpu") -> Teacher:
    path = Path(path)
    if not path.is_file():
        raise TeacherError(f"no teacher file at {path}")
    try:
        with safe_open(str(path), "pt") as f:
            header = f.metadata() or {}
        state = load_file(str(path), device=str(device))
        spec = DatasetSpec.from_dict(json.loads(header["spec"]))
        model, meta = header["model"], json.loads(header.get("meta", "{}"))
    except Exception as e:  # noqa: BLE001  (any damage reads as one clear error)
        raise TeacherError(f"{path}: not a readable teacher file ({e})") from e
    net = create_model(model, spec.channels, spec.num_classes, spec.image_size, seed=0)
    net.load_state_dict(state)
    net.to(device).eval()
    meta = {**meta, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "path": str(path.resolve())}
    return Teacher(net, model, spec, meta)
