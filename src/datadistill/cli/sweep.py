"""``datadistill sweep``: a grid of settings ranked on a validation split."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import EPILOG, _executor, _executor_options


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """``sweep``."""
    sw = sub.add_parser("sweep", help="rank a grid of settings by accuracy on a validation split of the training "
                        "data (never the test set); resumable", epilog=EPILOG)
    sw.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides shared by every point")
    sw.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                    help="a swept key and its values (repeat for more keys: every combination runs)")
    sw.add_argument("--preset", help="YAML preset name or path")
    sw.add_argument("--dataset")
    sw.add_argument("--method")
    sw.add_argument("--ipc", type=int, help="images per class")
    sw.add_argument("--iterations", type=int)
    sw.add_argument("--seed", type=int)
    sw.add_argument("--validation", type=float, default=0.1,
                    help="fraction of each class of the training set held out to score the points (default 0.1)")
    sw.add_argument("--device", help="auto, cpu, cuda ...")
    sw.add_argument("--root", help="data root")
    sw.add_argument("--out", required=True, help="sweep folder: jobs/*.json (one per point), runs/ (their run "
                    "folders), records.jsonl, summary.json and summary.md (the ranking)")
    _executor_options(sw, "point of the grid (ray: a Ray Tune grid search)")


def cmd_sweep(args: argparse.Namespace) -> int:
    """The ``sweep`` study (`studies.sweep`) from this command's flags: one path with ``datadistill study
    sweep``, whose flags are generated (``--set KEY=VALUE`` there for the overrides here)."""
    from ..device import pick_device
    from ..studies import run_study
    from ..studies.sweep import SweepConfig

    device = str(pick_device(args.device or "auto"))
    cfg = SweepConfig(grid=tuple(args.grid), preset=args.preset, method=args.method, dataset=args.dataset,
                      ipc=args.ipc, iterations=args.iterations, seed=args.seed, overrides=tuple(args.overrides),
                      validation=args.validation, root=args.root, device=device)
    with _executor(args, device) as ex:
        summary = run_study("sweep", cfg, args.out, ex)
    print((Path(args.out) / "summary.md").read_text(), end="")
    best = summary["results"][0]
    sets = " ".join(f"{k}={json.dumps(v)}" for k, v in best["point"].items())
    print(f"best on the validation split ({100 * args.validation:g}% of the training set): {sets} "
          f"({best['val_acc']:.2f}%); distil it on the whole training set and report its test accuracy with "
          f"`datadistill distill ... {sets}`")
    return 0


ORDER = 80  # its place in `datadistill --help`
HANDLERS = {"sweep": cmd_sweep}  # subcommand -> handler
