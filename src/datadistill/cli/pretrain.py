"""``datadistill pretrain``: a method's pools of starting networks (DD's pretrained settings)."""

from __future__ import annotations

import argparse
from typing import Any

from .common import _flag_dest, _method_flags


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """``pretrain``; a method's own options (DD's ``--nets``, ``--held-out``) are its `MethodEntry.pretrain_flags`."""
    pt = sub.add_parser("pretrain", help="train and store a pool of networks (DD's pretrained settings)")
    pt.add_argument("--method", default="dd", help="the method whose starting networks are trained (default dd)")
    pt.add_argument("--dataset", required=True)
    pt.add_argument("--model", default="lenet")
    pt.add_argument("--weight-init", default="xavier", help="initialization distribution (default, xavier, kaiming)")
    for name, (flag, owners) in _pretrain_flags().items():  # a method's own pool settings (DD's --nets ...)
        pt.add_argument(name, dest=_flag_dest(name), type=flag.type, default=flag.default, metavar=flag.key.upper(),
                        help=f"{', '.join(owners)}: {flag.help}")
    pt.add_argument("--epochs", type=int, default=3)
    pt.add_argument("--lr", type=float, default=0.01)
    pt.add_argument("--batch-size", type=int, default=128)
    pt.add_argument("--seed", type=int, default=0)
    pt.add_argument("--out", required=True, help="pool folder (an interrupted run resumes there)")
    pt.add_argument("--root", help="data root")
    pt.add_argument("--device", default="auto")


def cmd_pretrain(args: argparse.Namespace) -> int:
    """Reaches the method's ``pretrain`` hook through the registry (DD: its pools of networks)."""
    from ..config import ConfigError
    from ..methods import METHODS

    entry = METHODS.get(args.method)
    if entry.pretrain is None:
        able = [n for n in METHODS.names() if METHODS.get(n).pretrain is not None]
        raise ConfigError(f"method {entry.name!r} starts from no pretrained networks; pretrain is for: "
                          f"{', '.join(able)}")
    own = {f.flag: f for f in entry.pretrain_flags}
    given = {name: getattr(args, _flag_dest(name)) for name in _pretrain_flags()
             if getattr(args, _flag_dest(name)) is not None}
    foreign = sorted(set(given) - set(own))
    if foreign:
        raise ConfigError(f"{', '.join(foreign)}: not an option of {entry.name}'s pretrain")
    print(entry.pretrain(dataset=args.dataset, out=args.out, model=args.model, weight_init=args.weight_init,
                         epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed, root=args.root,
                         device=args.device, **{own[name].key: value for name, value in given.items()}))
    return 0


def _pretrain_flags() -> dict[str, tuple[Any, list[str]]]:
    return _method_flags(lambda entry: entry.pretrain_flags)


ORDER = 60  # its place in `datadistill --help`
HANDLERS = {"pretrain": cmd_pretrain}  # subcommand -> handler
