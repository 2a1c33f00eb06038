"""``datadistill study NAME`` (alias ``apps``): every registered study, its flags generated from its
config's fields.

A field ``per_class: int | None`` becomes ``--per-class`` (an int); a ``bool`` that defaults to
true becomes ``--no-NAME``; a tuple takes a comma-separated list; field metadata refine it: ``flag``
(another name), ``many`` (a repeated flag, its values given to ``parse`` as a list), ``parse``
(text -> value), ``metavar`` and ``help``. An `EvalProtocol` field becomes ``--protocol NAME`` plus
``key=value`` protocol fields, defaulting to the metadata's ``protocol`` preset with its
``n_models``. ``root`` and ``device`` are the data root and the device (``auto`` by default)."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path
from typing import Any

from ..config import ConfigError
from .common import _executor, _executor_options, _protocol

EPILOG = """Each job is one task with its own result file under --out/jobs: the same command resumes. Give
protocol fields as key=value (epochs=100 n_models=1). See docs/apps.md and docs/studies.md."""
_PLAIN = (int, float, str)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """``study NAME`` for every registered study (``apps NAME`` too)."""
    from ..studies import STUDIES, discover

    discover()
    sp = sub.add_parser("study", aliases=["apps"], help="studies of distilled sets: continual learning, membership "
                        "privacy, architecture search, accuracy against images per class")
    ssub = sp.add_subparsers(dest="study", required=True, metavar="STUDY")
    for name in STUDIES.names():
        study = STUDIES.get(name)
        q = ssub.add_parser(name, help=study.help, description=study.help, epilog=EPILOG)
        q.add_argument("--out", required=True, help="results folder: jobs/, records.jsonl, summary.json/.md, a figure")
        q.add_argument("--no-progress", action="store_true")
        hints = typing.get_type_hints(study.config)
        for f in dataclasses.fields(study.config):
            _add_field(q, f, hints[f.name])
        _executor_options(q, "job of the study")


def _flag(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _add_field(q: argparse.ArgumentParser, f: dataclasses.Field, tp: Any) -> None:
    from ..evaluation import EvalProtocol

    meta, flag = f.metadata, _flag(f)
    if tp is EvalProtocol:
        q.add_argument("overrides", nargs="*", metavar="key=value", help="evaluation protocol fields (epochs=100 ...)")
        q.add_argument("--protocol", help=f"how each network trains (an evaluation protocol; default "
                       f"{meta.get('protocol', 'dc')} with n_models={meta.get('n_models', 1)})")
        return
    if f.name == "device":
        q.add_argument("--device", default="auto", help="auto (default), cpu, cuda ...")
        return
    if f.name == "root":
        q.add_argument("--root", help="data root")
        return
    default = None if _required(f) else (f.default if f.default is not dataclasses.MISSING else f.default_factory())
    help_ = meta.get("help", "")
    if tp is bool:
        if default:
            q.add_argument("--no-" + f.name.replace("_", "-"), dest=f.name, action="store_false",
                           help=f"leave out {help_}")
        else:
            q.add_argument(flag, dest=f.name, action="store_true", help=help_)
        return
    if meta.get("many"):
        q.add_argument(flag, dest=f.name, action="append", default=[], metavar=meta.get("metavar"), help=help_)
        return
    _parser(f, tp)  # a field that cannot be a flag fails here, when the parser is built
    q.add_argument(flag, dest=f.name, required=_required(f), metavar=meta.get("metavar"),
                   default=argparse.SUPPRESS if not _required(f) else None, help=help_)


def _parser(f: dataclasses.Field, tp: Any):
    """Text -> the field's value (its ``parse``, a plain type, or a comma list of one)."""
    if "parse" in f.metadata:
        return f.metadata["parse"]
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    base = args[0] if typing.get_origin(tp) is not tuple and len(args) == 1 else tp
    if typing.get_origin(base) is tuple:
        item = typing.get_args(base)[0]

        def items(text: str) -> tuple[Any, ...]:
            try:
                return tuple(item(v.strip()) for v in text.split(",") if v.strip())
            except ValueError:
                raise ConfigError(f"{_flag(f)} {text!r}: give comma-separated {item.__name__} values") from None
        return items
    if base in _PLAIN:
        def plain(text: str) -> Any:
            try:
                return base(text)
            except ValueError:
                raise ConfigError(f"{_flag(f)} {text!r}: give a{'n' if base is int else ''} {base.__name__}") from None
        return plain
    raise TypeError(f"field {f.name!r} of type {tp!r} needs a 'parse' in its metadata to be a flag")


def config_from_args(study: Any, args: argparse.Namespace, device: str) -> Any:
    """The study's config from the parsed flags (the fields not given keep their defaults)."""
    from ..evaluation import EvalProtocol

    hints = typing.get_type_hints(study.config)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(study.config):
        tp = hints[f.name]
        if tp is EvalProtocol:
            protocol = _protocol(args.protocol, args.overrides, f.metadata.get("protocol", "dc"))
            if not any(o.startswith("n_models=") for o in args.overrides):  # the study's own number of networks
                protocol = protocol.with_(n_models=f.metadata.get("n_models", 1))
            values[f.name] = protocol
        elif f.name == "device":
            values[f.name] = device
        elif f.metadata.get("many"):
            given = getattr(args, f.name)
            values[f.name] = tuple(f.metadata["parse"](given)) if "parse" in f.metadata else tuple(given)
        elif hasattr(args, f.name):
            given = getattr(args, f.name)
            values[f.name] = given if tp is bool or given is None else _parser(f, tp)(given)
    return study.config(**values)


def cmd_study(args: argparse.Namespace) -> int:
    from ..device import pick_device
    from ..studies import get_study, run_study

    study = get_study(args.study)
    device = str(pick_device(args.device))
    cfg = config_from_args(study, args, device)
    with _executor(args, device) as ex:
        summary = run_study(study, cfg, args.out, ex)
    print(study.format(summary))
    print(f"records: {Path(args.out) / 'records.jsonl'}  summary: {Path(args.out) / 'summary.json'}")
    return 0


ORDER = 90  # its place in `datadistill --help`
HANDLERS = {"study": cmd_study, "apps": cmd_study}  # subcommand -> handler
