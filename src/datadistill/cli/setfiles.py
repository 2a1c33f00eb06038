"""Distilled-set files: ``datadistill show``, ``export`` and ``import``."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import _floats


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """``show``, ``export`` and ``import``."""
    s = sub.add_parser("show", help="write a PNG grid of a distilled set")
    s.add_argument("file")
    s.add_argument("--out", help="PNG path (default: FILE with .png)")
    s.add_argument("--root", help="data root, for the training images a set of real patches (RDED) is drawn beside")

    x = sub.add_parser("export", help="export a distilled set as an ImageFolder tree of PNGs")
    x.add_argument("file")
    x.add_argument("out", help="output folder (new or empty)")
    x.add_argument("--overwrite", action="store_true", help="replace what the output folder holds")

    im = sub.add_parser("import", help="read a distilled set saved by an author's reference code into a "
                        "distilled-set file, to evaluate it here (see docs/import.md)")
    im.add_argument("file", help="the author's file (or its run folder)")
    im.add_argument("--from", dest="source", required=True, metavar="FORMAT",
                    help="dc (DC, DSA, DM: res_*.pt), mtt, datm, haba (images_best.pt ...) or dd (results.pth)")
    im.add_argument("--dataset", required=True, help="the dataset it was distilled on (the files do not say)")
    im.add_argument("--out", required=True, help="the distilled-set file to write (.safetensors)")
    im.add_argument("--force", action="store_true", help="overwrite an existing --out")
    im.add_argument("--experiment", type=int, help="dc: which experiment of the file (default 0, the first)")
    im.add_argument("--lr", type=float, help="mtt, haba (datm without lr_<it>.pt): the learned step size, which "
                    "they only log")
    im.add_argument("--zca", type=float, help="mtt, datm, haba: the images are ZCA-whitened with this "
                    "regularization (their --zca: 0.1)")
    im.add_argument("--mean", type=_floats, help="the per-channel mean the images are normalized with, comma-"
                    "separated (default: the reference code's for the dataset)")
    im.add_argument("--std", type=_floats, help="the per-channel std, with --mean")
    im.add_argument("--ipc", type=int, help="haba: the storage budget in images per class (default: what the set "
                    "stores, rounded up)")
    im.add_argument("--root", help="data root")


def cmd_show(args: argparse.Namespace) -> int:
    from ..synset import load_synset
    from ..viz import save_grid

    f = load_synset(args.file)
    out = Path(args.out) if args.out else Path(args.file).with_suffix(".png")
    crops, sources, note = f.meta.get("crops"), None, ""
    if crops:  # a set of patches of real images: drawn beside its sources when the data is at hand
        from ..config import ConfigError
        from ..data.registry import DatasetMissingError
        from ..grids import open_for_evaluation

        try:
            sources = open_for_evaluation(args.file, root=args.root)[1].train.images
            note = ", each image beside its patches' training images"
        except (ConfigError, DatasetMissingError) as e:
            note = f"; its crops' training images are not drawn: {e}"
    save_grid(f.synset, f.spec, out, view=f.zca.invert if f.zca is not None else None, crops=crops, sources=sources)
    print(f"wrote {out} ({f.method}, {f.spec.name}, {f.synset.ipc} image(s) per class"
          + (", ZCA whitening inverted for viewing" if f.zca is not None else "") + note + ")")
    from ..methods import file_description

    for line in file_description(f.synset, f.meta):  # what the file's method says about its set (HaBa: collapse)
        print(line)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..synset import export_imagefolder, load_synset

    f = load_synset(args.file)
    if f.zca is not None:
        from ..synset import SynsetFileError

        raise SynsetFileError(f"{args.file} holds a set in ZCA-whitened space, which PNG files cannot hold (and which "
                              "trains only with real data whitened by the same transform); view it with `datadistill "
                              "show`, or in Python train on SynsetDataset(f.synset) and whiten real images with "
                              "f.zca.apply")
    out = export_imagefolder(f.synset, f.spec, args.out, overwrite=args.overwrite)
    print(f"wrote {len(f.synset)} PNG files under {out}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from ..synset.importers import ImportOptions, import_set

    opts = ImportOptions(experiment=args.experiment, lr=args.lr, zca=args.zca, mean=args.mean, std=args.std,
                         ipc=args.ipc)
    f = import_set(args.file, args.source, args.dataset, args.out, root=args.root, options=opts, force=args.force)
    lr = f.synset.learned_lr()
    print(f"imported {f.method} set ({type(f.synset).__name__}, {f.spec.name}, {f.synset.ipc} image(s) per class"
          + (f", step size {lr:g}" if lr is not None else "") + (f", ZCA {f.zca.regularization:g}" if f.zca else "")
          + f") into {args.out}; score it with `datadistill evaluate {args.out}`")
    return 0


ORDER = 40  # its place in `datadistill --help`
HANDLERS = {"show": cmd_show, "export": cmd_export, "import": cmd_import}  # subcommand -> handler
