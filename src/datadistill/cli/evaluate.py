"""``datadistill evaluate``: a distilled set (or the whole training set) scored by fresh models."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .common import _csv, _executor, _executor_options, _protocol


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """``evaluate``."""
    e = sub.add_parser("evaluate", help="train fresh models on a distilled set and report test accuracy",
                       epilog="eval overrides: key=value over EvalProtocol fields, e.g. epochs=100 n_models=3")
    e.add_argument("file", nargs="?", help="distilled-set .safetensors file")
    e.add_argument("overrides", nargs="*", metavar="key=value")
    e.add_argument("--models", type=_csv, help="comma-separated models (cross-architecture table)")
    e.add_argument("--protocol", default=None, help="evaluation preset (dc, dsa, mtt, dd, smoke; the papers' own: "
                   "dc-paper, dsa-paper = dm-paper, mtt-paper, haba-paper, frepo-paper, rded-paper)")
    e.add_argument("--full", action="store_true", help="baseline: train on the whole training set of --dataset")
    e.add_argument("--dataset", help="with --full: the dataset")
    e.add_argument("--zca", type=float, help="with --full: ZCA-whiten the dataset with this regularization (a "
                   "distilled-set FILE brings its own transform)")
    e.add_argument("--root", help="data root")
    e.add_argument("--device", default="auto")
    e.add_argument("--batch-models", type=int, default=1, metavar="N",
                   help="train N models together in one batched computation (same results up to float rounding; "
                   "DD's replay schedule and a method's own networks train one at a time)")
    e.add_argument("--save", action="store_true", help="record the results in the file's metadata")
    e.add_argument("--json", action="store_true", help="print the reports as JSON")
    e.add_argument("--work-dir", help="the folder of per-model results, kept so that a rerun resumes (default: "
                   "~/.cache/datadistill/evaluations/HASH of the file and protocol with --executor process or "
                   "ray; a temporary folder with the serial executor)")
    e.add_argument("--scores", action="store_true", help="also DD-Ranking's scores: improvement over a random "
                   "subset under the same protocol and labels, hard-label recovery and the label-robust score "
                   "(needs --full-accuracy)")
    e.add_argument("--full-accuracy", type=float, metavar="PCT", help="with --scores: the whole training set's "
                   "hard-label test accuracy (%%) with the same model, e.g. from `evaluate --full`")
    e.add_argument("--ars", action="store_true", help="with --scores: also the augmentation-robust score (every "
                   "run again without the protocol's augmentation)")
    e.add_argument("--lr-grid", type=_csv, metavar="LR,LR", help="with --scores: choose each run's learning rate "
                   "from these by accuracy on a validation split of the training set (never the test set)")
    e.add_argument("--validation", type=float, default=0.1, help="with --lr-grid: the held-out fraction of each "
                   "class (default 0.1)")
    e.add_argument("--random-seed", type=int, default=0, help="with --scores: the random subset's draw")
    _executor_options(e, "model and architecture")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..config import ConfigError
    from ..data import load_dataset
    from ..device import pick_device
    from ..evaluation import evaluate_full, format_table
    from ..grids import evaluate_on, open_for_evaluation
    from ..models import MODELS
    from ..synset import update_meta

    device = pick_device(args.device)
    if args.full:
        if not args.dataset:
            raise ConfigError("--full needs --dataset")
        if args.executor != "serial":
            raise ConfigError("--executor spreads the models of a FILE's evaluation; --full trains in this process")
        overrides = ([args.file] if args.file else []) + args.overrides
        protocol = _protocol(args.protocol, overrides, "dc")
        models = args.models or [protocol.model]
        for m in models:  # every name before the first model trains
            MODELS.get(m)
        data = load_dataset(args.dataset, args.root)
        if args.zca is not None:  # fitted on the training set, applied to train and test
            from ..data import whiten_dataset

            data = whiten_dataset(data, args.zca)
        reports = {m: evaluate_full(data, protocol, model=m, device=device, progress=True,
                                   batch_models=args.batch_models) for m in models}
    else:
        if not args.file:
            raise ConfigError("evaluate needs a distilled-set FILE (or --full --dataset NAME)")
        if args.zca is not None:
            raise ConfigError("--zca is for --full only: a distilled-set file carries the whitening it was distilled "
                              "with and evaluation applies that one")
        f, data, how = open_for_evaluation(args.file, root=args.root, device=device)  # as the file's method says
        protocol = _protocol(args.protocol, args.overrides, how.preset)
        asked = {o.partition("=")[0] for o in args.overrides}
        kept = {k: v for k, v in how.protocol.items() if k not in asked}  # what the set was made for
        protocol = protocol.with_(**kept) if kept else protocol
        models = args.models or [protocol.model]
        if args.scores:
            return _scores(args, f, data, protocol, models, device)
        with _work_dir(args) as work, _executor(args, device) as ex:  # serial by default: in this process
            reports = evaluate_on(ex, args.file, protocol, models, root=args.root, device=str(device),
                                  work_dir=work, networks=how.networks, batch_models=args.batch_models)
        extra = how.final_metrics(f.synset, data, device) if how.final_metrics is not None else None
        for line in how.format_metrics(extra) if extra else []:
            print(line)
        if args.save:
            ev = dict(f.meta.get("evaluation") or {})
            ev.update({m: r.to_dict() for m, r in reports.items()})
            update_meta(args.file, evaluation=ev)
    if args.json:
        print(json.dumps({m: r.to_dict() for m, r in reports.items()}, indent=2))
    else:
        print(format_table(reports))
        for line in dict.fromkeys(_labels_line(r.extra.get("labels")) for r in reports.values()):
            if line:
                print(line)
    return 0


def _work_dir(args: argparse.Namespace) -> Any:
    """Where the per-model results go (a context giving the folder): ``--work-dir``; else, under a
    parallel executor, None, the cache folder of the file and protocol (`grids.evaluation_dir`: a rerun
    resumes); else a temporary folder, removed after (a plain evaluation keeps nothing)."""
    import contextlib
    import tempfile

    if args.work_dir or args.executor != "serial":
        return contextlib.nullcontext(args.work_dir)
    return tempfile.TemporaryDirectory(prefix="datadistill-evaluate-")


def _labels_line(info: dict | None) -> str:
    """What the models were trained on, when it is not the classic hard labels."""
    if not info:
        return ""
    line = f"labels: {info['labels']} ({info['label_loss']}, temperature {info['label_temperature']:g})"
    t = info.get("teacher")
    if t:
        line += (f"; teacher {t['model']} on {t['dataset']} ({t['test_accuracy']}% test accuracy), {t['path']} "
                 f"sha256 {str(t['sha256'])[:12]}")
    return line


def _scores(args: argparse.Namespace, f: Any, data: Any, protocol: Any, models: list[str], device: Any) -> int:
    """``evaluate FILE --scores``: DD-Ranking's scores of the file for each model."""
    from ..config import ConfigError
    from ..evaluation import score_set

    if args.full_accuracy is None:
        raise ConfigError("--scores needs --full-accuracy PCT: the whole training set's hard-label accuracy with the "
                          "same model (measure it with `datadistill evaluate --full --dataset D`)")
    if args.executor != "serial" or args.work_dir or args.batch_models > 1:
        raise ConfigError("--scores trains its runs in this process; drop --executor, --work-dir and --batch-models")
    validation = None
    if args.lr_grid:  # held out of the data as the set sees it (whitened with the file's transform)
        from ..data.registry import validation_split

        validation = validation_split(data, args.validation)
    grid = [float(v) for v in args.lr_grid or ()]
    out = {}
    for m in models:
        sc = score_set(f.synset, data, protocol, full_accuracy=args.full_accuracy / 100, model=m, device=device,
                       validation=validation, lr_grid=grid, augmentation=args.ars, random_seed=args.random_seed,
                       progress=True)
        out[m] = {**sc.to_dict(), "reports": {k: r.to_dict() for k, r in sc.reports.items()}}
        if not args.json:
            print(f"{m}: {sc.summary()}")
    if args.save:
        from ..synset import update_meta

        update_meta(args.file, scores={m: {k: v for k, v in d.items() if k != "reports"} for m, d in out.items()})
    if args.json:
        print(json.dumps(out, indent=2))
    return 0


ORDER = 20  # its place in `datadistill --help`
HANDLERS = {"evaluate": cmd_evaluate}  # subcommand -> handler
