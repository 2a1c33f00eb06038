"""Teachers: networks trained on the real data whose outputs label a distilled set.

Soft-label methods and evaluations (SRe2L, RDED, DATM's label initialization, "a label is worth a
thousand images") need a network that has seen the whole training set. A teacher here is one of our
registered models in one ``.safetensors`` file: its state dict (parameters and buffers) plus JSON
metadata naming the model, the dataset spec it was trained on (normalization, ZCA whitening), where
it came from (trained by `train_teacher`, or an expert's epoch, `teacher_from_experts`) and its test
accuracy. A report that used a teacher records `Teacher.describe` (path, sha256, model, accuracy),
so a soft-label figure always names the network behind it.

``datadistill teacher --dataset D --model M --epochs E --out FILE`` trains one;
``datadistill teacher --from-experts DIR --out FILE`` takes an expert's parameters.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .augment.training import dsa_augment
from .config import ConfigError
from .data.spec import DatasetSpec, LoadedDataset
from .fileio import atomic_write, safetensors_header
from .models import MODELS, create_model
from .seeding import make_generator
from .train import accuracy, real_batches, train_classifier
from .version import versions

META_KEY = "datadistill-teacher"
FORMAT_VERSION = 1


class TeacherError(ConfigError):
    """A teacher file that cannot be used (missing, damaged, or trained on other data)."""


@dataclass
class Teacher:
    """A trained network that labels images: ``logits(x)``, ``probs(x, temperature)``."""

    net: nn.Module
    model: str
    spec: DatasetSpec
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    sha256: str | None = None

    def __post_init__(self) -> None:
        self.net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @torch.no_grad()
    def logits(self, x: torch.Tensor, chunk: int = 500) -> torch.Tensor:
        """The teacher's logits of ``x`` (eval mode, no graph), in chunks of ``chunk`` images."""
        dev = x.device
        out = [self.net(x[i : i + chunk].to(self.device)).to(dev) for i in range(0, x.shape[0], chunk)]
        return torch.cat(out) if out else x.new_zeros(0, self.spec.num_classes)

    def probs(self, x: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """``softmax(logits(x) / temperature)``."""
        return torch.softmax(self.logits(x) / temperature, dim=1)

    def to(self, device: torch.device | str) -> "Teacher":
        self.net.to(device)
        return self

    def check_fits(self, spec: DatasetSpec) -> None:
        """TeacherError unless the teacher was trained on data shaped and normalized as ``spec``
        (same dataset, classes, image shape and whitening)."""
        mine, theirs = self.spec, spec
        problems = [f"{what}: teacher {a!r} vs data {b!r}" for what, a, b in (
            ("dataset", mine.name, theirs.name), ("classes", mine.num_classes, theirs.num_classes),
            ("image shape", tuple(mine.shape), tuple(theirs.shape)),
            ("zca", mine.ref.zca, theirs.ref.zca)) if a != b]
        if problems:
            where = f" {self.path}" if self.path else ""
            raise TeacherError(f"the teacher{where} does not fit this data ({'; '.join(problems)}); train one with "
                               f"`datadistill teacher --dataset {theirs.name} --out FILE`")

    def describe(self) -> dict[str, Any]:
        """What a report records about the teacher."""
        return {"path": str(self.path) if self.path else None, "sha256": self.sha256, "model": self.model,
                "dataset": self.spec.name, "test_accuracy": self.meta.get("test_accuracy"),
                "source": self.meta.get("source")}


# ---------------------------------------------------------------------- making one
def train_teacher(data: LoadedDataset, *, model: str = "convnet", epochs: int = 10, lr: float = 0.01,
                  momentum: float = 0.9, weight_decay: float = 5e-4, batch_size: int = 256, augment: bool = True,
                  seed: int = 0, device: torch.device | str = "cpu", progress: bool = False,
                  checkpoint: str | os.PathLike[str] | None = None, log: Callable[[str], None] = print) -> Teacher:
    """Train ``model`` on the whole training set of ``data`` (SGD, lr x0.1 at half the epochs, DSA
    augmentation unless ``augment=False``, flips only where the dataset allows them) and measure it
    on the test set.

    ``checkpoint``: a file written (atomically) after every epoch; a run that finds one made with the
    same settings goes on from it, exactly as it would have gone on (a teacher of 20 epochs on the
    whole data takes hours on 2 cores). One made with other settings, or one that cannot be read, is
    said in a line and replaced. The caller removes it once the teacher is saved."""
    if epochs < 1:
        raise ConfigError(f"epochs must be >= 1, got {epochs}")
    name = MODELS.canonical(model)
    spec = data.spec
    settings = {"model": name, "dataset": spec.name, "epochs": epochs, "lr": lr, "momentum": momentum,
                "weight_decay": weight_decay, "batch_size": batch_size, "augment": bool(augment), "seed": seed}
    net = create_model(name, spec.channels, spec.num_classes, spec.image_size, seed=seed)
    aug = None
    if augment:
        aug = dsa_augment(spec, "color_crop_cutout_flip_scale_rotate")
    resume = _read_checkpoint(Path(checkpoint), settings, log) if checkpoint is not None else None
    before = float(resume["seconds"]) if resume else 0.0
    t0 = time.perf_counter()

    def save(state: dict) -> None:
        state = {**state, "settings": json.dumps(settings, sort_keys=True),
                 "seconds": before + time.perf_counter() - t0}
        atomic_write(Path(checkpoint), lambda p: torch.save(state, p))

    train_classifier(net, real_batches(data.train.to(device)), epochs=epochs, lr=lr, momentum=momentum,
                     weight_decay=weight_decay, milestones=(epochs // 2,), batch_size=batch_size,
                     generator=make_generator(seed, "teacher"), augment=aug, device=device, progress=progress,
                     desc="teacher", resume=resume, on_checkpoint=save if checkpoint is not None else None)
    acc = accuracy(net, data.test.to(device), device=device)
    source = {"kind": "trained", "epochs": epochs, "lr": lr, "momentum": momentum, "weight_decay": weight_decay,
              "batch_size": batch_size, "augment": "dsa" if augment else "none", "seed": seed,
              "seconds": round(before + time.perf_counter() - t0, 2)}
    return Teacher(net, name, spec, {"test_accuracy": round(100 * acc, 2), "source": source})


def _read_checkpoint(path: Path, settings: dict, log: Callable[[str], None]) -> dict | None:
    """The state in a teacher's checkpoint if it was made with ``settings``, else None (with a line)."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        made_with = json.loads(state["settings"])
    except Exception as e:  # noqa: BLE001 - our own scratch file: any damage means starting over
        log(f"the teacher's checkpoint {path} cannot be read ({type(e).__name__}); starting over")
        return None
    if made_with != settings:
        diff = ", ".join(f"{k} {made_with.get(k)!r} -> {v!r}" for k, v in settings.items() if made_with.get(k) != v)
        log(f"the teacher's checkpoint {path} was made with other settings ({diff}); starting over")
        return None
    log(f"resuming the teacher from {path} after epoch {state['epoch']} of {settings['epochs']}")
    return state


def teacher_from_experts(directory: str | os.PathLike[str], *, expert: int = 0, epoch: int | None = None,
                         dataset: str | None = None, device: torch.device | str = "cpu") -> Teacher:
    """Expert ``expert``'s parameters after ``epoch`` epochs (default: its last) as a teacher. The
    spec and test accuracy are the expert's own records (its shard holds both), so no data is loaded.
    ``dataset``: the dataset the caller expects the experts to have been trained on (checked)."""
    from .data import DATASETS  # noqa: PLC0415
    from .experts import ExpertBuffer  # noqa: PLC0415

    buf = ExpertBuffer.open(directory)
    cfg = buf.config
    if dataset is not None and DATASETS.canonical(dataset) != cfg.dataset:
        raise TeacherError(f"the experts in {directory} were trained on {cfg.dataset!r}, not {dataset!r}")
    epoch = buf.epochs if epoch is None else int(epoch)
    params = buf.params(expert, epoch)  # checks the expert and the epoch
    shard = buf.shards[expert].meta
    spec = DatasetSpec.from_dict(shard["spec"])
    net = create_model(cfg.model, spec.channels, spec.num_classes, spec.image_size, seed=0)
    missing = set(dict(net.named_parameters())) - set(params)
    if missing:
        raise TeacherError(f"the experts in {directory} lack parameters {sorted(missing)[:3]} of {cfg.model}")
    net.load_state_dict(params, strict=False)  # the experts store parameters; buffers keep their defaults
    source = {"kind": "experts", "directory": str(Path(directory)), "expert": expert, "epoch": epoch,
              "expert_config": cfg.to_dict()}
    return Teacher(net.to(device), cfg.model, spec, {"test_accuracy": shard["test_acc"][epoch], "source": source})


# ---------------------------------------------------------------------- the file
def save_teacher(path: str | os.PathLike[str], teacher: Teacher) -> Path:
    """Write ``teacher`` to ``path`` (atomically): state dict + metadata, no pickle."""
    path = Path(path)
    header = {"format_version": FORMAT_VERSION, "model": teacher.model, "dataset": teacher.spec.to_dict(),
              "versions": versions(), **{k: v for k, v in teacher.meta.items() if k not in ("model", "dataset")}}
    tensors = {k: v.detach().cpu().contiguous() for k, v in teacher.net.state_dict().items()}
    atomic_write(path, lambda p: save_file(tensors, str(p), metadata={META_KEY: json.dumps(header)}))
    teacher.path, teacher.sha256 = path, _sha256(path)
    return path


def load_teacher(path: str | os.PathLike[str], device: torch.device | str = "cpu") -> Teacher:
    """A teacher file written by `save_teacher` (TeacherError names what is wrong with it)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise TeacherError(f"no teacher file {path}; make one with `datadistill teacher --dataset D --out {path}` "
                           "(or --from-experts DIR)")
    try:
        raw = safetensors_header(path, META_KEY)
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise TeacherError(f"{path} is not a readable safetensors file ({e})") from None
    if raw is None:
        raise TeacherError(f"{path} is not a teacher file (no {META_KEY} metadata; a distilled set or an expert?)")
    try:
        meta = json.loads(raw)
        spec = DatasetSpec.from_dict(meta["dataset"])
        model = str(meta["model"])
    except (ValueError, KeyError, TypeError) as e:
        raise TeacherError(f"{path}: damaged teacher metadata ({type(e).__name__}: {e})") from None
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise TeacherError(f"{path} has teacher format {meta.get('format_version')}; this datadistill reads "
                           f"<= {FORMAT_VERSION} (upgrade datadistill)")
    net = create_model(model, spec.channels, spec.num_classes, spec.image_size, seed=0)
    try:
        net.load_state_dict(tensors)
    except RuntimeError as e:
        raise TeacherError(f"{path}: its tensors do not fit a {model} ({str(e).splitlines()[0]})") from None
    return Teacher(net.to(device), model, spec, meta, path=path, sha256=_sha256(path))


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
