"""``datadistill list``: registered names."""

from __future__ import annotations

import argparse


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """``list``."""
    ls = sub.add_parser("list", help="list registered names")
    ls.add_argument("what", choices=["models", "methods", "datasets", "presets", "protocols"])


def cmd_list(args: argparse.Namespace) -> int:
    from ..config import preset_names
    from ..data import DATASETS
    from ..evaluation import PROTOCOLS
    from ..methods import METHODS
    from ..models import MODELS

    if args.what == "presets":
        names = preset_names()
    elif args.what == "models":
        names = [f"{n} ({', '.join(MODELS.aliases(n))})" if MODELS.aliases(n) else n for n in MODELS.names()]
    elif args.what == "methods":
        width = max(map(len, METHODS.names()))
        names = [f"{n:<{width}}  {METHODS.get(n).description}".rstrip() for n in METHODS.names()]
    else:
        names = {"datasets": DATASETS, "protocols": PROTOCOLS}[args.what].names()
    print("\n".join(names))
    return 0


ORDER = 100  # its place in `datadistill --help`
HANDLERS = {"list": cmd_list}  # subcommand -> handler
