"""``datadistill experts``: expert trajectories (MTT's buffer)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .common import _csv, _executor, _executor_options

if TYPE_CHECKING:
    from ..experts import ExpertConfig


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """``experts``."""
    ex = sub.add_parser("experts", help="train and store expert trajectories (MTT's buffer); resumable, "
                        "parallel with --indices")
    ex.add_argument("--dataset", required=True)
    ex.add_argument("--model", default="convnet", help="model name or alias (ConvNet, ConvNetD4 ...)")
    ex.add_argument("--experts", type=int, default=10, help="number of experts in the buffer")
    ex.add_argument("--epochs", type=int, default=20, help="epochs per expert (parameters stored after each)")
    ex.add_argument("--lr", type=float, default=0.01)
    ex.add_argument("--batch-size", type=int, default=256)
    ex.add_argument("--augment", default="dsa", choices=["dsa", "none"])
    ex.add_argument("--dsa-strategy", default="color_crop_cutout_flip_scale_rotate")
    ex.add_argument("--zca", type=float, help="ZCA-whiten the data with this regularization (MTT uses 0.1)")
    ex.add_argument("--sam", type=float, metavar="RHO", help="FTD's sharpness-aware training (GSAM, adaptive) "
                    "with this ascent radius, as DATM's experts (its README: 0.01); default: plain SGD (MTT)")
    ex.add_argument("--sam-alpha", type=float, help="with --sam: weight of GSAM's orthogonal correction (default 0.3, "
                    "DATM's README)")
    ex.add_argument("--seed", type=int, default=0)
    ex.add_argument("--indices", help="train only these experts, e.g. 0-4 or 0,1,2 (other processes do the rest)")
    ex.add_argument("--out", help="buffer folder (default ~/.cache/datadistill/experts/DATASET-MODEL-HASH)")
    ex.add_argument("--root", help="data root")
    ex.add_argument("--device", default="auto")
    ex.add_argument("--no-progress", action="store_true")
    _executor_options(ex, "expert")


def _indices(text: str) -> list[int]:
    """``"0-4"``, ``"0,1,2"`` or ``"0-4,7"`` -> expert numbers (ranges inclusive)."""
    from ..experts import ExpertError

    out: list[int] = []
    for part in _csv(text):
        a, dash, b = part.partition("-")
        try:
            lo, hi = int(a), int(b) if dash else int(a)
        except ValueError:
            raise ExpertError(f"--indices {text!r}: use numbers and inclusive ranges, e.g. 0-4 or 0,1,2") from None
        if hi < lo:
            raise ExpertError(f"--indices {text!r}: range {part} is empty")
        out.extend(range(lo, hi + 1))
    if not out:
        raise ExpertError(f"--indices {text!r} names no expert")
    return out


def experts_config(args: argparse.Namespace) -> ExpertConfig:
    """The `ExpertConfig` of a parsed ``experts`` command line."""
    from ..experts import ExpertConfig

    sam = {} if args.sam_alpha is None else {"sam_alpha": args.sam_alpha}
    return ExpertConfig(dataset=args.dataset, model=args.model, n_experts=args.experts, epochs=args.epochs,
                        lr=args.lr, batch_size=args.batch_size, augment=args.augment, dsa_strategy=args.dsa_strategy,
                        zca=args.zca, seed=args.seed, sam_rho=args.sam, **sam)


def cmd_experts(args: argparse.Namespace) -> int:
    import time

    from ..device import pick_device
    from ..experts import default_experts_dir
    from ..grids import train_experts_on

    cfg = experts_config(args)
    out = Path(args.out) if args.out else default_experts_dir(cfg)
    indices = _indices(args.indices) if args.indices else None
    start = time.perf_counter()
    device = pick_device(args.device)
    try:
        with _executor(args, device) as ex:  # serial by default: one task per expert, in this process
            buf = train_experts_on(ex, cfg, out, indices=indices, root=args.root, device=str(device))
    except KeyboardInterrupt:
        print(f"\nfinished experts are kept in {out}; the same command trains the rest", file=sys.stderr)
        raise
    s = buf.summary()
    epochs = f"{buf.epochs} epoch{'s' * (buf.epochs != 1)}"
    if cfg.sam_rho is not None:
        epochs += f", FTD sharpness-aware: rho {cfg.sam_rho:g}, alpha {cfg.sam_alpha:g}"
    print(f"expert trajectories in {out}: {len(buf)} of {cfg.n_experts} experts finished ({cfg.model} on "
          f"{cfg.dataset}, {epochs} each); this run took {time.perf_counter() - start:.1f} s; mean final "
          f"test accuracy {s['mean_final_test_acc']:.2f}%")
    return 0


ORDER = 70  # its place in `datadistill --help`
HANDLERS = {"experts": cmd_experts}  # subcommand -> handler
