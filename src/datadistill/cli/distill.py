"""``datadistill distill``: its flags (DD's ``--net-init`` and ``--source-dataset`` among them) and
the run config they make."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import EPILOG, _csv, _flag_dest, _method_flags, _run_dict, _zca

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
    d.add_argument("--init", help="deprecated: --image-init or --net-init, whichever the value names (the commands "
                   "of older benchmark records use it)")
    for name, (flag, owners) in _distill_flags().items():  # each method's own settings, declared by the method
        d.add_argument(name, dest=_flag_dest(name), metavar=flag.key.upper(), help=f"{', '.join(owners)}: {flag.help}")
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
    _init_flags(base, args.init, image_init=args.image_init,
                given={f: getattr(args, _flag_dest(f)) for f in _distill_flags()
                       if getattr(args, _flag_dest(f)) is not None})
    return from_dict(RunConfig, base, where="config")


def cmd_distill(args: argparse.Namespace) -> int:
    from ..engine import run

    cfg = distill_config(args)
    out = Path(args.out or f"runs/{cfg.method}-{cfg.dataset}-ipc{cfg.ipc}-s{cfg.seed}")
    result = run(cfg, out, resume=args.resume, force=args.force, progress=not args.no_progress)
    if result is not None:
        print(f"run directory: {out}  (distilled set: {out / 'distilled.safetensors'}, grid: {out / 'grid.png'})")
    return 0


def _distill_flags() -> dict[str, tuple[Any, list[str]]]:
    return _method_flags(lambda entry: entry.flags)


def _init_flags(base: dict[str, Any], init: str | None = None, *, image_init: str | None = None,
                given: dict[str, str] | None = None) -> None:
    """``--image-init`` sets ``image_init``; a method's own flags (``given``: flag -> value, e.g. DD's
    ``--net-init``) set its ``method_config`` fields, as the method declares them (`MethodFlag`). The
    deprecated ``--init`` is ``--image-init`` when the value names an image initialization or the
    method declares no ``--net-init``, else ``--net-init``."""
    from ..config import ConfigError, deprecated, renamed_keys
    from ..methods import METHODS

    given = dict(given or {})
    if image_init is None and init is None and not given:
        return
    entry = METHODS.get(base.get("method") or "dm")
    declared = {f.flag: f for f in entry.flags}
    if init is not None:
        if image_init is not None or "--net-init" in given:
            raise ConfigError("--init is the old name of --image-init and --net-init; give only the new ones")
        if init in entry.image_inits or "--net-init" not in declared:
            deprecated("--init", "--image-init")
            image_init = init  # an unknown name is reported as an image initialization
        else:
            deprecated("--init", "--net-init")
            given["--net-init"] = init  # validated by the method's config (an unknown name lists the valid ones)
    if image_init is not None:
        base["image_init"] = image_init
    mc = dict(base.get("method_config") or {})
    old = {new: o for o, new in renamed_keys(entry.config).items()}  # a field also set under its old name
    for flag, value in given.items():
        if flag not in declared:
            owners = [n for n in METHODS.names() if any(f.flag == flag for f in METHODS.get(n).flags)]
            raise ConfigError(f"{flag}: method {entry.name!r} has no such setting ({flag} is {', '.join(owners)}'s)")
        mc[declared[flag].key] = value
    for flag in given:
        for key, value in declared[flag].implies.items():
            if key not in mc and old.get(key) not in mc:
                mc[key] = value
    base["method_config"] = mc


ORDER = 10  # its place in `datadistill --help`
HANDLERS = {"distill": cmd_distill}  # subcommand -> handler
