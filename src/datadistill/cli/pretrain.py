"""``datadistill pretrain``: a method's pools of starting networks (DD's pretrained settings)."""

from __future__ import annotations

import argparse


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """``pretrain`` (``--nets`` and ``--held-out``: DD's pools)."""
    pt = sub.add_parser("pretrain", help="train and store a pool of networks (DD's pretrained settings)")
    pt.add_argument("--method", default="dd", help="the method whose starting networks are trained (default dd)")
    pt.add_argument("--dataset", required=True)
    pt.add_argument("--model", default="lenet")
    pt.add_argument("--weight-init", default="xavier", help="initialization distribution (default, xavier, kaiming)")
    pt.add_argument("--nets", type=int, default=30, help="networks in the pool")
    pt.add_argument("--held-out", type=int, default=20, help="the last N networks are kept for evaluation only")
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
    print(entry.pretrain(dataset=args.dataset, out=args.out, model=args.model, weight_init=args.weight_init,
                         nets=args.nets, held_out=args.held_out, epochs=args.epochs, lr=args.lr,
                         batch_size=args.batch_size, seed=args.seed, root=args.root, device=args.device))
    return 0


ORDER = 60  # its place in `datadistill --help`
HANDLERS = {"pretrain": cmd_pretrain}  # subcommand -> handler
