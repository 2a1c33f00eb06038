"""``datadistill data``: list or prepare datasets."""

from __future__ import annotations

import argparse


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """``data list`` and ``data prepare``."""
    dt = sub.add_parser("data", help="list or prepare datasets")
    dsub = dt.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    dl = dsub.add_parser("list", help="which datasets are on disk and how to get the others")
    dl.add_argument("--root")
    dp = dsub.add_parser("prepare", help="download (or fetch from an offline mirror) and verify a dataset")
    dp.add_argument("name")
    dp.add_argument("--root")


def cmd_data(args: argparse.Namespace) -> int:
    from ..data import DATASETS
    from ..data.registry import resolve_root

    root = resolve_root(args.root)
    if args.data_command == "prepare":
        entry = DATASETS.get(args.name)
        if entry.prepare is None:
            print(f"{entry.name}: cannot be fetched automatically; {entry.instructions}")
            return 1
        if not entry.available(root):  # before any download
            from ..paths import check_output_dir

            check_output_dir(root, "data root")
        print(entry.prepare(root))
        return 0
    print(f"data root: {root}")
    for name in DATASETS.names():
        entry = DATASETS.get(name)
        ok = entry.available(root)
        how = "" if ok else (f"  -> datadistill data prepare {name}" if entry.prepare else f"  -> {entry.instructions}")
        print(f"  {'[x]' if ok else '[ ]'} {name:<14}{how}")
    return 0


ORDER = 50  # its place in `datadistill --help`
HANDLERS = {"data": cmd_data}  # subcommand -> handler
