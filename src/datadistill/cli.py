"""The ``datadistill`` command. argparse stops here: everything below takes typed arguments."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import RunConfig
    from .experts import ExpertConfig

EPILOG = "Config: a YAML preset (--preset) plus key=value overrides, e.g. method_config.batch_real=128 eval.epochs=100"


def _csv(s: str) -> list[str]:
    return [p.strip() for p in s.split(",") if p.strip()]


def _zca(s: str) -> float | str:
    """``--zca``: a regularization, ``off`` (no whitening) or ``auto`` (the method's default)."""
    if s.lower() in ("off", "auto"):
        return s.lower()
    try:
        return float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a regularization (e.g. 0.1), off or auto, got {s!r}") from None


def _floats(s: str) -> tuple[float, ...]:
    try:
        return tuple(float(p) for p in _csv(s))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r}: give comma-separated numbers, e.g. 0.4914,0.4822,0.4465") from None


APPS_EPILOG = """Defaults: continual trains with `dsa-paper` (the CL_DM.py script's 1000 epochs with DSA) and 3
networks per order and step; privacy and nas with `dc`, one network per job. Give protocol fields as key=value (epochs=100 n_models=1).
Every job is one task with its own result file under --out/jobs: the same command resumes. See docs/apps.md."""


def _executor_options(p: argparse.ArgumentParser, what: str) -> None:
    g = p.add_argument_group("parallel execution", f"one task per {what}; finished tasks are kept and never rerun")
    g.add_argument("--executor", default="serial", help="serial (default), process (a local pool) or ray")
    g.add_argument("--workers", type=int, help="parallel tasks (process, local ray; default: CPUs / --threads)")
    g.add_argument("--threads", type=int, help="torch threads per task (default: all for serial, 1 otherwise); "
                   "results are bit-identical across executors at equal --threads")
    g.add_argument("--ray-address", help="a running Ray cluster: auto, or the head's host:port (default: start a "
                   "local one)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="datadistill", description="Dataset distillation: distill, evaluate, view.")
    import datadistill

    class Version(argparse.Action):  # action="version" would wrap a long path (at hyphens too)
        def __call__(self, parser, namespace, values, option_string=None):
            print(f"datadistill {datadistill.__version__} from {Path(datadistill.__file__).parent}")
            parser.exit()

    p.add_argument("--version", action=Version, nargs=0, default=argparse.SUPPRESS,
                   help="print the version and the package's path, and exit")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("distill", help="distill a dataset into a few images per class", epilog=EPILOG)
    d.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    d.add_argument("--preset", help="YAML preset name (see `datadistill list presets`) or path")
    d.add_argument("--dataset")
    d.add_argument("--method")
    d.add_argument("--ipc", type=int, help="images per class")
    d.add_argument("--iterations", type=int)
    d.add_argument("--image-init", help="how the images start: real, noise (dd also kmeans, average)")
    d.add_argument("--net-init", help="methods with a network-initialization setting (dd): fixed, random, "
                   "pretrained_fixed, pretrained_random")
    d.add_argument("--init", help="deprecated: --image-init or --net-init, whichever the value names")
    d.add_argument("--source-dataset", help="dd pretrained settings: the dataset the starting networks are trained "
                   "on (another dataset than --dataset: domain adaptation)")
    d.add_argument("--eval-every", type=int, help="evaluate every K iterations (0: only at the end)")
    d.add_argument("--models", type=_csv, help="comma-separated models for the final evaluation")
    d.add_argument("--seed", type=int)
    d.add_argument("--zca", type=_zca, help="ZCA-whiten the data first with this regularization (MTT's CIFAR and "
                   "Tiny ImageNet settings use 0.1), or off; default: the method's (haba: 0.1, as its authors; the "
                   "others: off); the transform is stored with the distilled set")
    d.add_argument("--device", help="auto, cpu, cuda, cuda:1 ...")
    d.add_argument("--root", help="data root (default $DATADISTILL_DATA or ~/.cache/datadistill/data)")
    d.add_argument("--out", help="run directory (default runs/METHOD-DATASET-ipcN-sSEED)")
    d.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    d.add_argument("--force", action="store_true", help="overwrite an existing run directory")
    d.add_argument("--no-progress", action="store_true")

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
    e.add_argument("--work-dir", help="with --executor: the folder of per-model results (default "
                   "~/.cache/datadistill/evaluations/HASH of the file and protocol)")
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
    te.add_argument("--force", action="store_true", help="overwrite an existing --out")
    te.add_argument("--root", help="data root")
    te.add_argument("--device", default="auto")
    te.add_argument("--no-progress", action="store_true")

    s = sub.add_parser("show", help="write a PNG grid of a distilled set")
    s.add_argument("file")
    s.add_argument("--out", help="PNG path (default: FILE with .png)")
    s.add_argument("--root", help="data root, for the training images a set of real patches (RDED) is drawn beside")

    x = sub.add_parser("export", help="export a distilled set as an ImageFolder tree of PNGs")
    x.add_argument("file")
    x.add_argument("out", help="output folder")

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

    dt = sub.add_parser("data", help="list or prepare datasets")
    dsub = dt.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    dl = dsub.add_parser("list", help="which datasets are on disk and how to get the others")
    dl.add_argument("--root")
    dp = dsub.add_parser("prepare", help="download (or fetch from an offline mirror) and verify a dataset")
    dp.add_argument("name")
    dp.add_argument("--root")

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
    sw.add_argument("--out", required=True, help="sweep folder: trials/*.json, runs/, sweep.md")
    _executor_options(sw, "point of the grid (ray: a Ray Tune grid search)")

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

    ls = sub.add_parser("list", help="list registered names")
    ls.add_argument("what", choices=["models", "methods", "datasets", "presets", "protocols"])
    return p


def _one_line_errors(parser: argparse.ArgumentParser) -> None:
    """argparse prints its usage and then ``PROG: error: ...``; every datadistill error is instead one
    line, ``datadistill: error: ...``, here pointing at the command's ``--help`` (exit status 2)."""

    def error(message: str) -> None:
        parser.exit(2, f"datadistill: error: {message} (see `{parser.prog} --help`)\n")

    parser.error = error  # type: ignore[method-assign]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _one_line_errors(sub)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    _one_line_errors(parser)
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may come after options (argparse stops collecting positionals there)
    stray = [x for x in extra if x.startswith("-") or "=" not in x or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    return args


def _one_line_warnings() -> None:
    """Deprecation messages as one ``datadistill: warning: ...`` line, not Python's two-line form."""
    import warnings

    from .config import DeprecatedKeyWarning

    plain = warnings.formatwarning

    def fmt(message, category, filename, lineno, line=None):  # noqa: ANN001 (the warnings module's signature)
        if issubclass(category, DeprecatedKeyWarning):
            return f"datadistill: warning: {message}\n"
        return plain(message, category, filename, lineno, line)

    warnings.formatwarning = fmt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _one_line_warnings()
    try:
        return {"distill": cmd_distill, "evaluate": cmd_evaluate, "show": cmd_show, "export": cmd_export,
                "data": cmd_data, "list": cmd_list, "pretrain": cmd_pretrain, "import": cmd_import,
                "experts": cmd_experts, "sweep": cmd_sweep, "teacher": cmd_teacher, "apps": cmd_apps}[args.command](args)
    except KeyboardInterrupt:
        print("\ninterrupted; a distill run continues with --resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into a reader that stopped (`| head`): quiet, as other tools are
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's own flush at exit would raise again
        return 141
    except Exception as e:  # user-facing errors get one clear line; bugs keep their traceback
        if _is_user_error(e):
            print(f"datadistill: error: {e}", file=sys.stderr)
            return 2
        raise


def _is_user_error(e: Exception) -> bool:
    from .config import ConfigError
    from .data import DatasetDownloadError, DatasetMissingError, DatasetOptionError
    from .data.zca import ZCAError
    from .experts import ExpertError
    from .methods import DivergenceError
    from .paths import OutputPathError
    from .registry import UnknownNameError
    from .rundir import RunDirError
    from .synset import SynsetFileError

    # a method's own errors about what the user asked for are ConfigErrors (e.g. DD's PoolError)
    return isinstance(e, (ConfigError, DatasetMissingError, DatasetDownloadError, DatasetOptionError, RunDirError,
                          UnknownNameError, SynsetFileError, DivergenceError, ExpertError, ZCAError, OutputPathError))


def _run_dict(args: argparse.Namespace, **more: Any) -> dict[str, Any]:
    """A run config as a dict: the preset, then the flags given (the shared ones and ``more``), then
    the ``key=value`` overrides."""
    from .config import apply_overrides, load_preset

    base: dict[str, Any] = load_preset(args.preset) if args.preset else {}
    flags = {"dataset": args.dataset, "method": args.method, "ipc": args.ipc, "iterations": args.iterations,
             "seed": args.seed, "device": args.device, "data_root": args.root, **more}
    base.update({k: v for k, v in flags.items() if v is not None})
    return apply_overrides(base, args.overrides)


def distill_config(args: argparse.Namespace) -> RunConfig:
    """The `RunConfig` of a parsed ``distill`` command line: the preset, the flags, the overrides
    (also what `benchmarks/paper_cost.py` times a suite's jobs with)."""
    from .config import RunConfig, from_dict

    if args.zca == "off":  # None would read as "not given": say it as the override it is, before the user's
        args = argparse.Namespace(**{**vars(args), "zca": None, "overrides": ["zca=null", *args.overrides]})
    base = _run_dict(args, eval_every=args.eval_every, zca=args.zca, models=args.models or None)
    _init_flags(base, args.init, args.source_dataset, image_init=args.image_init, net_init=args.net_init)
    return from_dict(RunConfig, base, where="config")


def cmd_distill(args: argparse.Namespace) -> int:
    from .engine import run

    cfg = distill_config(args)
    out = Path(args.out or f"runs/{cfg.method}-{cfg.dataset}-ipc{cfg.ipc}-s{cfg.seed}")
    result = run(cfg, out, resume=args.resume, force=args.force, progress=not args.no_progress)
    if result is not None:
        print(f"run directory: {out}  (distilled set: {out / 'distilled.safetensors'}, grid: {out / 'grid.png'})")
    return 0


def _init_flags(base: dict[str, Any], init: str | None = None, source: str | None = None, *,
                image_init: str | None = None, net_init: str | None = None) -> None:
    """``--image-init`` sets ``image_init``; ``--net-init`` and ``--source-dataset`` set the method's
    ``method_config.net_init`` and ``source_dataset``. The deprecated ``--init`` is whichever of
    the two its value names (the two sets of names do not overlap)."""
    import dataclasses

    from .config import ConfigError, deprecated
    from .methods import METHODS

    if image_init is None and net_init is None and init is None and source is None:
        return
    entry = METHODS.get(base.get("method") or "dm")
    fields = {f.name for f in dataclasses.fields(entry.config)}
    if init is not None:
        if image_init is not None or net_init is not None:
            raise ConfigError("--init is the old name of --image-init and --net-init; give only the new ones")
        if init in entry.image_inits or "net_init" not in fields:
            deprecated("--init", "--image-init")
            image_init = init  # an unknown name is reported as an image initialization
        else:
            deprecated("--init", "--net-init")
            net_init = init  # validated by the method's config (an unknown name lists the valid ones)
    if image_init is not None:
        base["image_init"] = image_init
    mc = dict(base.get("method_config") or {})
    if net_init is not None:
        if "net_init" not in fields:
            raise ConfigError(f"--net-init: method {entry.name!r} has no network-initialization setting")
        mc["net_init"] = net_init
    if source is not None:
        if "source_dataset" not in fields:
            raise ConfigError(f"--source-dataset: method {entry.name!r} does not start from pretrained networks")
        mc["source_dataset"] = source
        if "net_init" not in mc and "init" not in mc:
            mc["net_init"] = "pretrained_random"
    base["method_config"] = mc


def _protocol(name: str | None, overrides: list[str], default: str):
    from .config import ConfigError, apply_overrides
    from .evaluation import get_protocol

    fields = apply_overrides({}, overrides)
    try:
        return get_protocol(name or default, **{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
    except (ValueError, TypeError) as e:
        raise ConfigError(str(e)) from e


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .config import ConfigError
    from .data import load_dataset
    from .device import pick_device
    from .evaluation import evaluate_full, evaluate_models, format_table
    from .grids import open_for_evaluation
    from .models import MODELS
    from .synset import update_meta

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
            from .data import whiten_dataset

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
        if not _executor_asked(args):
            reports = evaluate_models(f.synset, data, protocol, models, device=device, progress=True,
                                      networks=how.networks, batch_models=args.batch_models)
        else:
            from .grids import evaluate_on

            if args.batch_models > 1:
                raise ConfigError("--batch-models trains the models of one process together; with --executor each "
                                  "model is a task of its own: give one or the other")
            cap = len(how.networks) if how.networks is not None and hasattr(how.networks, "__len__") else None
            with _executor(args, device) as ex:
                reports = evaluate_on(ex, args.file, protocol, models, root=args.root, device=str(device),
                                      work_dir=args.work_dir, networks_cap=cap)
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
    from .config import ConfigError
    from .evaluation import score_set

    if args.full_accuracy is None:
        raise ConfigError("--scores needs --full-accuracy PCT: the whole training set's hard-label accuracy with the "
                          "same model (measure it with `datadistill evaluate --full --dataset D`)")
    if _executor_asked(args) or args.batch_models > 1:
        raise ConfigError("--scores trains its runs in this process; drop --executor and --batch-models")
    validation = None
    if args.lr_grid:  # held out of the data as the set sees it (whitened with the file's transform)
        from .data.registry import validation_split

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
        from .synset import update_meta

        update_meta(args.file, scores={m: {k: v for k, v in d.items() if k != "reports"} for m, d in out.items()})
    if args.json:
        print(json.dumps(out, indent=2))
    return 0


def cmd_teacher(args: argparse.Namespace) -> int:
    from .config import ConfigError
    from .data import load_dataset
    from .device import pick_device
    from .teachers import save_teacher, teacher_from_experts, train_teacher

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
                                progress=not args.no_progress)
    save_teacher(out, teacher.to("cpu"))
    print(f"teacher {teacher.model} on {teacher.spec.name}: test accuracy {teacher.meta['test_accuracy']:.2f}%, "
          f"written to {out} (sha256 {teacher.sha256[:12]})")
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    """Reaches the method's ``pretrain`` hook through the registry (DD: its pools of networks)."""
    from .config import ConfigError
    from .methods import METHODS

    entry = METHODS.get(args.method)
    if entry.pretrain is None:
        able = [n for n in METHODS.names() if METHODS.get(n).pretrain is not None]
        raise ConfigError(f"method {entry.name!r} starts from no pretrained networks; pretrain is for: "
                          f"{', '.join(able)}")
    print(entry.pretrain(dataset=args.dataset, out=args.out, model=args.model, weight_init=args.weight_init,
                         nets=args.nets, held_out=args.held_out, epochs=args.epochs, lr=args.lr,
                         batch_size=args.batch_size, seed=args.seed, root=args.root, device=args.device))
    return 0


def _indices(text: str) -> list[int]:
    """``"0-4"``, ``"0,1,2"`` or ``"0-4,7"`` -> expert numbers (ranges inclusive)."""
    from .experts import ExpertError

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
    from .experts import ExpertConfig

    sam = {} if args.sam_alpha is None else {"sam_alpha": args.sam_alpha}
    return ExpertConfig(dataset=args.dataset, model=args.model, n_experts=args.experts, epochs=args.epochs,
                        lr=args.lr, batch_size=args.batch_size, augment=args.augment, dsa_strategy=args.dsa_strategy,
                        zca=args.zca, seed=args.seed, sam_rho=args.sam, **sam)


def cmd_experts(args: argparse.Namespace) -> int:
    import time

    from .device import pick_device
    from .experts import default_experts_dir, train_experts

    cfg = experts_config(args)
    out = Path(args.out) if args.out else default_experts_dir(cfg)
    indices = _indices(args.indices) if args.indices else None
    start = time.perf_counter()
    device = pick_device(args.device)
    try:
        if not _executor_asked(args):
            buf = train_experts(cfg, out, root=args.root, device=device, progress=not args.no_progress,
                                indices=indices)
        else:
            from .grids import train_experts_on

            with _executor(args, device) as ex:
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


def cmd_sweep(args: argparse.Namespace) -> int:
    from .sweep import parse_grid, sweep

    base = _run_dict(args)
    grid = parse_grid(args.grid)
    with _executor(args, args.device or "cpu") as ex:
        results = sweep(base, grid, args.out, ex, validation=args.validation)
    print((Path(args.out) / "sweep.md").read_text(), end="")
    best = results[0]
    sets = " ".join(f"{k}={json.dumps(v)}" for k, v in best["point"].items())
    print(f"best on the validation split ({100 * args.validation:g}% of the training set): {sets} "
          f"({best['val_acc']:.2f}%); distil it on the whole training set and report its test accuracy with "
          f"`datadistill distill ... {sets}`")
    return 0


def _executor_asked(args: argparse.Namespace) -> bool:
    """Whether any executor option was given (else the command runs its plain in-process path)."""
    return bool(args.executor != "serial" or args.workers or args.threads or args.ray_address
                or getattr(args, "work_dir", None))


def _executor(args: argparse.Namespace, device: Any):
    from .executor import make_executor

    return make_executor(args.executor, workers=args.workers, threads=args.threads, address=args.ray_address,
                         device=str(device), progress=not getattr(args, "no_progress", False))


def cmd_apps(args: argparse.Namespace) -> int:
    from .device import pick_device

    device = str(pick_device(args.device))
    with _executor(args, device) as ex:
        if args.app == "continual":
            from .apps.common import RANDOM, parse_sets
            from .apps.continual import DEFAULT_PROTOCOL, ContinualConfig, continual, format_summary, parse_orders

            protocol = _models_default(_protocol(args.protocol, args.overrides, DEFAULT_PROTOCOL), args.overrides, 3)
            cfg = ContinualConfig(args.dataset, tuple(parse_sets(args.set, dataset=args.dataset)), steps=args.steps,
                                  orders=parse_orders(args.orders), per_class=args.per_class,
                                  baselines=() if args.no_random else (RANDOM,), protocol=protocol, root=args.root,
                                  device=device)
            summary = continual(cfg, args.out, ex)
        elif args.app == "nas":
            from .apps.common import RANDOM, parse_sets
            from .apps.nas import NASConfig, format_summary, nas, parse_grid_options

            protocol = _models_default(_protocol(args.protocol, args.overrides, "dc"), args.overrides, 1)
            cfg = NASConfig(args.dataset, tuple(parse_sets(args.set, dataset=args.dataset)),
                            grid=parse_grid_options(args.width, args.depth, args.norm, args.act, args.pool),
                            per_class=args.per_class, baselines=() if args.no_random else (RANDOM,),
                            protocol=protocol, full_protocol=protocol.with_(epochs=args.full_epochs, n_models=args.full_models),
                            root=args.root, device=device)
            summary = nas(cfg, args.out, ex)
        else:
            from .apps.privacy import PrivacyConfig, check_protocol, format_summary, parse_pipeline, privacy

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


def cmd_show(args: argparse.Namespace) -> int:
    from .synset import load_synset
    from .viz import save_grid

    f = load_synset(args.file)
    out = Path(args.out) if args.out else Path(args.file).with_suffix(".png")
    crops, sources, note = f.meta.get("crops"), None, ""
    if crops:  # a set of patches of real images: drawn beside its sources when the data is at hand
        from .config import ConfigError
        from .data.registry import DatasetMissingError
        from .grids import open_for_evaluation

        try:
            sources = open_for_evaluation(args.file, root=args.root)[1].train.images
            note = ", each image beside its patches' training images"
        except (ConfigError, DatasetMissingError) as e:
            note = f"; its crops' training images are not drawn: {e}"
    save_grid(f.synset, f.spec, out, view=f.zca.invert if f.zca is not None else None, crops=crops, sources=sources)
    print(f"wrote {out} ({f.method}, {f.spec.name}, {f.synset.ipc} image(s) per class"
          + (", ZCA whitening inverted for viewing" if f.zca is not None else "") + note + ")")
    from .synset.factorized import FactorizedSet, collapse_diagnostic

    if isinstance(f.synset, FactorizedSet):  # HaBa: its storage and how far its hallucinators collapsed
        s = f.synset
        budget = f.meta.get("budget_ipc")  # a file from before the budget had one owner names it here
        ratio = s.storage_ratio() * s.ipc / budget if budget else s.storage_ratio()
        print(f"{s.bases_per_class} bases x {s.n_hallucinators} hallucinators per class; storage {ratio:.3f}x "
              f"a plain set of {budget or s.ipc} image(s) per class")
        print("\n".join(collapse_diagnostic(s).lines()))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .synset import export_imagefolder, load_synset

    f = load_synset(args.file)
    if f.zca is not None:
        from .synset import SynsetFileError

        raise SynsetFileError(f"{args.file} holds a set in ZCA-whitened space, which PNG files cannot hold (and which "
                              "trains only with real data whitened by the same transform); view it with `datadistill "
                              "show`, or in Python train on SynsetDataset(f.synset) and whiten real images with "
                              "f.zca.apply")
    out = export_imagefolder(f.synset, f.spec, args.out)
    print(f"wrote {len(f.synset)} PNG files under {out}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from .synset.importers import ImportOptions, import_set

    opts = ImportOptions(experiment=args.experiment, lr=args.lr, zca=args.zca, mean=args.mean, std=args.std,
                         ipc=args.ipc)
    f = import_set(args.file, args.source, args.dataset, args.out, root=args.root, options=opts, force=args.force)
    lr = f.synset.learned_lr()
    print(f"imported {f.method} set ({type(f.synset).__name__}, {f.spec.name}, {f.synset.ipc} image(s) per class"
          + (f", step size {lr:g}" if lr is not None else "") + (f", ZCA {f.zca.regularization:g}" if f.zca else "")
          + f") into {args.out}; score it with `datadistill evaluate {args.out}`")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from .data import DATASETS
    from .data.registry import resolve_root

    root = resolve_root(args.root)
    if args.data_command == "prepare":
        entry = DATASETS.get(args.name)
        if entry.prepare is None:
            print(f"{entry.name}: cannot be fetched automatically; {entry.instructions}")
            return 1
        if not entry.available(root):  # before any download
            from .paths import check_output_dir

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


def cmd_list(args: argparse.Namespace) -> int:
    from .config import preset_names
    from .data import DATASETS
    from .evaluation import PROTOCOLS
    from .methods import METHODS
    from .models import MODELS

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


if __name__ == "__main__":
    sys.exit(main())
