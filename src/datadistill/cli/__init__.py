"""The ``datadistill`` command. argparse stops here: everything below takes typed arguments.

One module per subcommand (or per group of related ones: ``setfiles`` holds show, export and import)
holds its parser (``add_parsers(sub)``), its handlers (``HANDLERS``: subcommand -> ``cmd_*``) and its
place in ``--help`` (``ORDER``); ``common`` holds what several share. This module finds every such
module of the package (a new subcommand is one file here and no edit elsewhere), puts the parser
together and dispatches, and keeps the names callers import (``main``, ``parse_args``,
``build_parser``, ``distill_config``, ``experts_config``, ``_is_user_error``)."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from pathlib import Path
from types import ModuleType

from .common import _is_user_error, _one_line_errors, _one_line_warnings
from .distill import distill_config
from .experts import experts_config

__all__ = ["build_parser", "distill_config", "experts_config", "main", "parse_args"]


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
    for module in subcommand_modules():
        module.add_parsers(sub)
    return p


def subcommand_modules() -> list[ModuleType]:
    """Every module of this package but ``common``: each defines subcommands (``add_parsers``,
    ``HANDLERS`` and ``ORDER``), found, not listed, so that a new subcommand is one module."""
    found = [importlib.import_module(f"{__name__}.{m.name}")
             for m in pkgutil.iter_modules(sys.modules[__name__].__path__)
             if not m.name.startswith("_") and m.name != "common"]
    return sorted(found, key=lambda mod: (mod.ORDER, mod.__name__))


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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _one_line_warnings()
    try:
        handlers = {name: fn for module in subcommand_modules() for name, fn in module.HANDLERS.items()}
        return handlers[args.command](args)
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

