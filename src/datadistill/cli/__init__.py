"""The ``datadistill`` command. argparse stops here: everything below takes typed arguments.

One module per subcommand (or per group of related ones: ``setfiles`` holds show, export and import)
holds its parser and its ``cmd_*`` handler; ``common`` holds what several share. This module puts
the parser together and dispatches, and keeps the names callers import (``main``, ``parse_args``,
``build_parser``, ``distill_config``, ``experts_config``, ``_is_user_error``)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import data, distill, evaluate, experts, listing, pretrain, setfiles, study, sweep, teacher
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
    # the order of `datadistill --help`
    for module in (distill, evaluate, teacher, setfiles, data, pretrain, experts, sweep, study, listing):
        module.add_parsers(sub)
    return p


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
        return {"distill": distill.cmd_distill, "evaluate": evaluate.cmd_evaluate, "show": setfiles.cmd_show,
                "export": setfiles.cmd_export, "data": data.cmd_data, "list": listing.cmd_list,
                "pretrain": pretrain.cmd_pretrain, "import": setfiles.cmd_import, "experts": experts.cmd_experts,
                "sweep": sweep.cmd_sweep, "teacher": teacher.cmd_teacher, "study": study.cmd_study,
                "apps": study.cmd_study}[args.command](args)
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

