"""``datadistill distill``: its flags (DD's ``--net-init`` and ``--source-dataset`` among them) and
the run config they make."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import EPILOG, _csv, _run_dict, _zca

if TYPE_CHECKING:
    from ..config import RunConfig


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """``distill``."""
    d = sub.add_parser("distill", help="distill a dataset into a few images per class", epilog=EPILOG)
    d.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    d.add_argument("--preset", help="YAML preset name (see `datadistill list presets`) or path")
    d.add_argument("--dataset")
    d.add_argument("--method")
    d.add_argument("--ipc", type=int, help="images per class")
    d.add_argument("--iterations", type=int)
    d.add_argument("--image-init", help="how the images start: real, noise (dd also kmeans, average)")
    d.add_argument("--net-init", help="methods with a network-initialization setting (dd): fixed, random, "
                   "pretrained_fixed, pretrained_random")
    d.add_argument("--init", help="deprecated: --image-init or --net-init, whichever the value names")
    d.add_argument("--source-dataset", help="dd pretrained settings: the dataset the starting networks are trained "
                   "on (another dataset than --dataset: domain adaptation)")
    d.add_argument("--eval-every", type=int, help="evaluate every K iterations (0: only at the end)")
    d.add_argument("--models", type=_csv, help="comma-separated models for the final evaluation")
    d.add_argument("--seed", type=int)
    d.add_argument("--zca", type=_zca, help="ZCA-whiten the data first with this regularization (MTT's CIFAR and "
                   "Tiny ImageNet settings use 0.1), or off; default: the method's (haba: 0.1, as its authors; the "
                   "others: off); the transform is stored with the distilled set")
    d.add_argument("--device", help="auto, cpu, cuda, cuda:1 ...")
    d.add_argument("--root", help="data root (default $DATADISTILL_DATA or ~/.cache/datadistill/data)")
    d.add_argument("--out", help="run directory (default runs/METHOD-DATASET-ipcN-sSEED)")
    d.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    d.add_argument("--force", action="store_true", help="overwrite an existing run directory")
    d.add_argument("--no-progress", action="store_true")


def distill_config(args: argparse.Namespace) -> RunConfig:
    """The `RunConfig` of a parsed ``distill`` command line: the preset, the flags, the overrides
    (also what `benchmarks/paper_cost.py` times a suite's jobs with)."""
    from ..config import RunConfig, from_dict

    if args.zca == "off":  # None would read as "not given": say it as the override it is, before the user's
        args = argparse.Namespace(**{**vars(args), "zca": None, "overrides": ["zca=null", *args.overrides]})
    base = _run_dict(args, eval_every=args.eval_every, zca=args.zca, models=args.models or None)
    _init_flags(base, args.init, args.source_dataset, image_init=args.image_init, net_init=args.net_init)
    return from_dict(RunConfig, base, where="config")


def cmd_distill(args: argparse.Namespace) -> int:
    from ..engine import run

    cfg = distill_config(args)
    out = Path(args.out or f"runs/{cfg.method}-{cfg.dataset}-ipc{cfg.ipc}-s{cfg.seed}")
    result = run(cfg, out, resume=args.resume, force=args.force, progress=not args.no_progress)
    if result is not None:
        print(f"run directory: {out}  (distilled set: {out / 'distilled.safetensors'}, grid: {out / 'grid.png'})")
    return 0


def _init_flags(base: dict[str, Any], init: str | None = None, source: str | None = None, *,
                image_init: str | None = None, net_init: str | None = None) -> None:
    """``--image-init`` sets ``image_init``; ``--net-init`` and ``--source-dataset`` set the method's
    ``method_config.net_init`` and ``source_dataset``. The deprecated ``--init`` is whichever of
    the two its value names (the two sets of names do not overlap)."""
    import dataclasses

    from ..config import ConfigError, deprecated
    from ..methods import METHODS

    if image_init is None and net_init is None and init is None and source is None:
        return
    entry = METHODS.get(base.get("method") or "dm")
    fields = {f.name for f in dataclasses.fields(entry.config)}
    if init is not None:
        if image_init is not None or net_init is not None:
            raise ConfigError("--init is the old name of --image-init and --net-init; give only the new ones")
        if init in entry.image_inits or "net_init" not in fields:
            deprecated("--init", "--image-init")
            image_init = init  # an unknown name is reported as an image initialization
        else:
            deprecated("--init", "--net-init")
            net_init = init  # validated by the method's config (an unknown name lists the valid ones)
    if image_init is not None:
        base["image_init"] = image_init
    mc = dict(base.get("method_config") or {})
    if net_init is not None:
        if "net_init" not in fields:
            raise ConfigError(f"--net-init: method {entry.name!r} has no network-initialization setting")
        mc["net_init"] = net_init
    if source is not None:
        if "source_dataset" not in fields:
            raise ConfigError(f"--source-dataset: method {entry.name!r} does not start from pretrained networks")
        mc["source_dataset"] = source
        if "net_init" not in mc and "init" not in mc:
            mc["net_init"] = "pretrained_random"
    base["method_config"] = mc


ORDER = 10  # its place in `datadistill --help`
HANDLERS = {"distill": cmd_distill}  # subcommand -> handler
