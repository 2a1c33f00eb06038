"""From a `RunConfig` to a run that can start: every default filled in, every name validated
(`resolve`), and everything checkable before the run's folder exists checked (`check_run`).

A resumed run keeps the configuration it was started with (`saved_config`), including a
``config.yaml`` written before keys were renamed (their old names still load).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from .config import ConfigError, RunConfig, from_dict, load_yaml, new_names, renamed_keys
from .data import DATASETS, LoadedDataset, load_dataset
from .device import pick_device
from .evaluation import PROTOCOLS, EvalProtocol, get_protocol
from .methods import METHODS, Context, MethodEntry
from .models import MODELS
from .registry import UnknownNameError
from .seeding import make_generator


@dataclass
class Resolved:
    """A `RunConfig` with every default filled in and every name validated."""

    cfg: RunConfig
    entry: MethodEntry
    method_cfg: Any
    protocol: EvalProtocol
    iterations: int
    image_init: str
    models: tuple[str, ...]
    zca: float | None = None  # the whitening the run applies (``cfg.zca`` with "auto" resolved); None: none

    def to_dict(self) -> dict[str, Any]:
        """The resolved configuration as saved in a run's ``config.yaml``."""
        d = self.cfg.to_dict()
        d.update(method=self.entry.name, iterations=self.iterations, image_init=self.image_init, zca=self.zca,
                 models=list(self.models), method_config=dataclasses.asdict(self.method_cfg),
                 eval=self.protocol.to_dict())
        d["eval"]["preset"] = d["eval"].pop("name")
        return d


def resolve(cfg: RunConfig) -> Resolved:
    entry = METHODS.get(cfg.method)
    DATASETS.get(cfg.dataset)
    method_cfg = from_dict(entry.config, cfg.method_config, where=f"method_config ({entry.name})")
    ev = dict(cfg.eval)
    preset = ev.pop("preset", entry.eval_preset)
    labels = ev.get("labels", PROTOCOLS.get(preset).labels.mode)  # a preset may relabel with a teacher (rded-paper)
    if labels == "teacher" and not ev.get("teacher") and entry.teacher(method_cfg):
        ev["teacher"] = entry.teacher(method_cfg)  # a method's own teacher relabels its evaluation unless told otherwise
    protocol = get_protocol(preset, **{k: _tuple(v) for k, v in ev.items()})  # ConfigError names the field
    for name in (protocol.model, *cfg.models, entry.network(method_cfg) or protocol.model):
        MODELS.get(name)
    image_init = cfg.image_init or entry.image_init
    if image_init not in entry.image_inits:
        raise ConfigError(f"image_init {image_init!r} is not an image initialization of {entry.name}; valid: "
                          f"{', '.join(entry.image_inits)}")
    iterations = entry.iterations if cfg.iterations is None else cfg.iterations  # ranges: RunConfig
    if entry.iterations == 0 and iterations > 0:
        raise ConfigError(f"method {entry.name!r} selects real images and has no iterations; use iterations=0")
    zca = entry.zca if cfg.zca == "auto" else cfg.zca
    return Resolved(cfg, entry, method_cfg, protocol, iterations, image_init, tuple(cfg.models) or (protocol.model,),
                    zca=None if zca is None else float(zca))


def _tuple(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


@dataclass
class Checked:
    """A run that passed every check that can be made before it starts: its resolved config, the
    device and the training data (loaded and, with ``zca``, whitened, on the CPU)."""

    res: Resolved
    device: torch.device
    data: LoadedDataset


def check_run(cfg: RunConfig) -> Checked:
    """Everything that can be checked before a run starts, before its folder exists: names and
    ranges (`resolve`), the device, the dataset on disk and its options, ZCA, the images per class
    against the smallest class, and the method's own requirements (`MethodEntry.check`: e.g. DD's
    pool folder, MTT's experts). Loads the data the run needs anyway."""
    res = resolve(cfg)
    device = pick_device(cfg.device)
    data = load_dataset(cfg.dataset, cfg.data_root, **cfg.dataset_options)
    if res.zca is not None:  # fitted on the training set, applied to train and test (cached per process)
        from .data import whiten_dataset

        data = whiten_dataset(data, res.zca)
    check_ipc(cfg.ipc, data)
    if res.entry.check is not None:
        ctx = Context(data=data, synset=None, device=device, generator=make_generator(cfg.seed, "check"),
                      seed=cfg.seed, ipc=cfg.ipc, iterations=res.iterations, data_root=cfg.data_root,
                      dataset_options=dict(cfg.dataset_options))
        res.entry.check(res.method_cfg, ctx)
    return Checked(res, device, data)


def check_ipc(ipc: int, data: LoadedDataset) -> None:
    """A distilled set holds at most as many images per class as the smallest real class has."""
    counts = torch.bincount(data.train.labels.cpu(), minlength=data.spec.num_classes)
    small = int(counts.argmin())
    n = int(counts[small])
    if ipc > n:
        names = data.spec.class_names
        label = f"{small}" + (f" '{names[small]}'" if small < len(names) and names[small] != str(small) else "")
        raise ConfigError(f"ipc {ipc} is more than the smallest class of {data.spec.name} has ({n} images, class "
                          f"{label}); valid: 1..{n}")


def saved_config(cfg: RunConfig, out: Path, log: Callable[[str], Any]) -> RunConfig:
    """The configuration an interrupted run was started with (a resumed run keeps it); ``cfg``, the
    one asked for now, only to say which of its values are ignored. A method config key that did not
    exist when the run was saved takes the value that behaves as the run did (the config class's
    ``SAVED_BEFORE``, e.g. HaBa's ``bases_rule``), not today's default."""
    saved = load_yaml(out / "config.yaml")
    try:
        asked = resolve(cfg).to_dict()
    except (ConfigError, UnknownNameError):
        asked = {}
    keys = {f.name for f in dataclasses.fields(RunConfig)} | set(renamed_keys(RunConfig))
    if isinstance(saved.get("method_config"), dict) and saved.get("method") in METHODS:
        # keys added to a method since the run was saved keep the behaviour it ran with (`SAVED_BEFORE`)
        before = dict(getattr(METHODS.get(saved["method"]).config, "SAVED_BEFORE", {}) or {})
        saved["method_config"] = {**before, **saved["method_config"]}
    cfg = from_dict(RunConfig, {k: v for k, v in saved.items() if k in keys}, where=str(out / "config.yaml"))
    saved = new_names(RunConfig, saved)  # an older config.yaml compared under today's names
    if isinstance(saved.get("method_config"), dict) and saved.get("method") in METHODS:
        saved["method_config"] = new_names(METHODS.get(saved["method"]).config, saved["method_config"])
    differ = sorted(k for k in saved if k in asked and asked[k] != saved[k])
    log(f"resuming with the configuration saved in {out / 'config.yaml'}"
        + (f"; ignoring the requested {', '.join(f'{k}={asked[k]!r}' for k in differ)} (saved: "
           f"{', '.join(f'{k}={saved[k]!r}' for k in differ)}; use --force or another --out to start over)"
           if differ else ""))
    return cfg
