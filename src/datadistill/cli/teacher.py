"""``datadistill teacher``: a network that labels sets with soft labels."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """``teacher``."""
    te = sub.add_parser("teacher", help="train a teacher network on the real data (or take an expert's) for "
                        "soft labels: evaluate labels=teacher teacher=FILE, RDED")
    te.add_argument("--dataset", help="the dataset (with --from-experts: the experts' own)")
    te.add_argument("--model", default="convnet")
    te.add_argument("--epochs", type=int, default=10)
    te.add_argument("--lr", type=float, default=0.01)
    te.add_argument("--batch-size", type=int, default=256)
    te.add_argument("--no-augment", action="store_true", help="train without DSA augmentation")
    te.add_argument("--seed", type=int, default=0)
    te.add_argument("--from-experts", metavar="DIR", help="use an expert's parameters instead of training")
    te.add_argument("--expert", type=int, default=0, help="with --from-experts: which expert")
    te.add_argument("--epoch", type=int, help="with --from-experts: which epoch (default: the last)")
    te.add_argument("--out", required=True, help="the teacher file (.safetensors)")
    te.add_argument("--force", action="store_true", help="overwrite an existing --out (an interrupted run of the "
                    "same settings still goes on from its OUT.partial checkpoint)")
    te.add_argument("--root", help="data root")
    te.add_argument("--device", default="auto")
    te.add_argument("--no-progress", action="store_true")


def cmd_teacher(args: argparse.Namespace) -> int:
    from ..config import ConfigError
    from ..data import load_dataset
    from ..device import pick_device
    from ..teachers import save_teacher, teacher_from_experts, train_teacher

    out = Path(args.out)
    if out.exists() and not args.force:
        raise ConfigError(f"{out} exists; pass --force to overwrite it")
    device = pick_device(args.device)
    if args.from_experts:
        teacher = teacher_from_experts(args.from_experts, expert=args.expert, epoch=args.epoch, dataset=args.dataset,
                                       device=device)
    else:
        if not args.dataset:
            raise ConfigError("teacher needs --dataset (or --from-experts DIR)")
        data = load_dataset(args.dataset, args.root)
        teacher = train_teacher(data, model=args.model, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                                augment=not args.no_augment, seed=args.seed, device=device,
                                progress=not args.no_progress, checkpoint=checkpoint_path(out))
    save_teacher(out, teacher.to("cpu"))
    checkpoint_path(out).unlink(missing_ok=True)
    print(f"teacher {teacher.model} on {teacher.spec.name}: test accuracy {teacher.meta['test_accuracy']:.2f}%, "
          f"written to {out} (sha256 {teacher.sha256[:12]})")
    return 0


def checkpoint_path(out: Path) -> Path:
    """Where a teacher in training keeps its last epoch: ``OUT.partial`` beside ``--out`` (an
    interrupted command run again with the same settings goes on from it)."""
    return out.with_name(out.name + ".partial")


ORDER = 30  # its place in `datadistill --help`
HANDLERS = {"teacher": cmd_teacher}  # subcommand -> handler
