"""``datadistill apps``: continual learning, membership privacy and architecture search on distilled sets."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .common import _executor, _executor_options, _protocol


APPS_EPILOG = """Defaults: continual trains with `dsa-paper` (the CL_DM.py script's 1000 epochs with DSA) and 3
networks per order and step; privacy and nas with `dc`, one network per job. Give protocol fields as key=value (epochs=100 n_models=1).
Every job is one task with its own result file under --out/jobs: the same command resumes. See docs/apps.md."""


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """``apps continual``, ``apps privacy`` and ``apps nas``."""
    ap = sub.add_parser("apps", help="what distilled sets are for: continual learning, membership privacy, "
                        "architecture search")
    asub = ap.add_subparsers(dest="app", required=True)
    cl = asub.add_parser("continual", help="class-incremental learning with a memory of K images per class from "
                         "each set (DC/DM's CL_DM.py); resumable", epilog=APPS_EPILOG)
    pv = asub.add_parser("privacy", help="membership inference (loss threshold and LiRA) against models trained "
                         "on distilled sets, a real subset and all the data; resumable", epilog=APPS_EPILOG)
    na = asub.add_parser("nas", help="rank a grid of ConvNets by training on each set against the whole data "
                         "(Spearman, Kendall, time saved); resumable", epilog=APPS_EPILOG)
    for q, what in ((cl, "network of a set, order and step"), (pv, "run of a pipeline on a half"),
                    (na, "architecture and set")):
        q.add_argument("overrides", nargs="*", metavar="key=value", help="evaluation protocol fields (epochs=100 ...)")
        q.add_argument("--dataset", required=True)
        q.add_argument("--protocol", help="how each network trains (an evaluation protocol; default: see below)")
        q.add_argument("--out", required=True, help="results folder: jobs/, records.jsonl, summary.json/.md, a PNG")
        q.add_argument("--root", help="data root")
        q.add_argument("--device", default="auto")
        q.add_argument("--no-progress", action="store_true")
        _executor_options(q, what)
    for q in (cl, na):
        q.add_argument("--set", action="append", default=[], metavar="NAME=FILE",
                       help="a distilled-set file to compare (repeat; herding: a herding file)")
        q.add_argument("--per-class", type=int, help="K images per class (default: the sets' own)")
        q.add_argument("--no-random", action="store_true", help="leave out the random baseline")
    cl.add_argument("--steps", type=int, default=5, help="class groups arriving one after another (default 5)")
    cl.add_argument("--orders", default="0-4", help="class-order seeds (default 0-4, as the script)")
    pv.add_argument("--distill", action="append", default=[], metavar="'NAME: key=value ...'",
                    help="a distillation pipeline run on each half, e.g. 'dm: preset=dm-cpu iterations=100' (repeat)")
    pv.add_argument("--pool", type=int, default=100, help="images per class in the pool (default 100)")
    pv.add_argument("--splits", type=int, default=2, help="random halvings of the pool (two runs each; default 2)")
    pv.add_argument("--per-class", type=int, default=10, help="K of the distilled sets and the real subset")
    pv.add_argument("--experts", type=int, default=2, help="experts per half for trajectory matching (default 2)")
    for opt in ("width", "depth", "norm", "act", "pool"):
        na.add_argument(f"--{opt}", help=f"ConvNet {opt} values, comma-separated")
    na.add_argument("--full-epochs", type=int, default=20, help="epochs of the whole-data training (default 20)")
    na.add_argument("--full-models", type=int, default=2,
                    help="whole-data networks per architecture, seeds 0.. (default 2: the reference's agreement "
                         "with itself is measured; 1 skips it)")


def cmd_apps(args: argparse.Namespace) -> int:
    from ..device import pick_device

    device = str(pick_device(args.device))
    with _executor(args, device) as ex:
        if args.app == "continual":
            from ..apps.common import RANDOM, parse_sets
            from ..apps.continual import DEFAULT_PROTOCOL, ContinualConfig, continual, format_summary, parse_orders

            protocol = _models_default(_protocol(args.protocol, args.overrides, DEFAULT_PROTOCOL), args.overrides, 3)
            cfg = ContinualConfig(args.dataset, tuple(parse_sets(args.set, dataset=args.dataset)), steps=args.steps,
                                  orders=parse_orders(args.orders), per_class=args.per_class,
                                  baselines=() if args.no_random else (RANDOM,), protocol=protocol, root=args.root,
                                  device=device)
            summary = continual(cfg, args.out, ex)
        elif args.app == "nas":
            from ..apps.common import RANDOM, parse_sets
            from ..apps.nas import NASConfig, format_summary, nas, parse_grid_options

            protocol = _models_default(_protocol(args.protocol, args.overrides, "dc"), args.overrides, 1)
            cfg = NASConfig(args.dataset, tuple(parse_sets(args.set, dataset=args.dataset)),
                            grid=parse_grid_options(args.width, args.depth, args.norm, args.act, args.pool),
                            per_class=args.per_class, baselines=() if args.no_random else (RANDOM,),
                            protocol=protocol, full_protocol=protocol.with_(epochs=args.full_epochs, n_models=args.full_models),
                            root=args.root, device=device)
            summary = nas(cfg, args.out, ex)
        else:
            from ..apps.privacy import PrivacyConfig, check_protocol, format_summary, parse_pipeline, privacy

            protocol = check_protocol(_protocol(args.protocol, args.overrides, "dc"))
            cfg = PrivacyConfig(args.dataset, tuple(parse_pipeline(t) for t in args.distill), pool=args.pool,
                                splits=args.splits, per_class=args.per_class, protocol=protocol,
                                experts=args.experts, root=args.root, device=device)
            summary = privacy(cfg, args.out, ex)
    print(format_summary(summary))
    print(f"records: {Path(args.out) / 'records.jsonl'}  summary: {Path(args.out) / 'summary.json'}")
    return 0


def _models_default(protocol: Any, overrides: list[str], n: int) -> Any:
    """The application's own number of networks unless the command line gives ``n_models``."""
    return protocol if any(o.startswith("n_models=") for o in overrides) else protocol.with_(n_models=n)
