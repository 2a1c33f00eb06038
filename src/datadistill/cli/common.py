"""What the subcommands share: argument types, the executor options, one-line errors and warnings,
and the config pieces several commands build (a run from flags, an evaluation protocol)."""

from __future__ import annotations

import argparse
from typing import Any, Callable


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


def _executor_options(p: argparse.ArgumentParser, what: str) -> None:
    g = p.add_argument_group("parallel execution", f"one task per {what}; finished tasks are kept and never rerun")
    g.add_argument("--executor", default="serial", help="serial (default), process (a local pool) or ray")
    g.add_argument("--workers", type=int, help="parallel tasks (process, local ray; default: CPUs / --threads)")
    g.add_argument("--threads", type=int, help="torch threads per task (default: all for serial, 1 otherwise); "
                   "results are bit-identical across executors at equal --threads")
    g.add_argument("--ray-address", help="a running Ray cluster: auto, or the head's host:port (default: start a "
                   "local one)")


def _method_flags(of: Callable[[Any], tuple]) -> dict[str, tuple[Any, list[str]]]:
    """The flags methods declare for a command (``of(entry)``: e.g. ``MethodEntry.flags`` for ``distill``,
    ``pretrain_flags`` for ``pretrain``): flag -> (its first declaration, the methods that declare it)."""
    from ..methods import METHODS

    out: dict[str, tuple[Any, list[str]]] = {}
    for name in METHODS.names():
        for f in of(METHODS.get(name)):
            out.setdefault(f.flag, (f, []))[1].append(name)
    return out


def _flag_dest(flag: str) -> str:
    """The namespace attribute of a method's declared flag."""
    return "method_flag_" + flag.lstrip("-").replace("-", "_")


def _executor(args: argparse.Namespace, device: Any):
    from ..executor import make_executor

    return make_executor(args.executor, workers=args.workers, threads=args.threads, address=args.ray_address,
                         device=str(device), progress=not getattr(args, "no_progress", False))


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


def _one_line_warnings() -> None:
    """Deprecation messages as one ``datadistill: warning: ...`` line, not Python's two-line form."""
    import warnings

    from ..config import DeprecatedKeyWarning

    plain = warnings.formatwarning

    def fmt(message, category, filename, lineno, line=None):  # noqa: ANN001 (the warnings module's signature)
        if issubclass(category, DeprecatedKeyWarning):
            return f"datadistill: warning: {message}\n"
        return plain(message, category, filename, lineno, line)

    warnings.formatwarning = fmt


def _is_user_error(e: Exception) -> bool:
    """An error about what the user asked for (`errors.UserError`: one line, exit 2), not a bug."""
    from ..errors import UserError

    return isinstance(e, UserError)


def _run_dict(args: argparse.Namespace, **more: Any) -> dict[str, Any]:
    """A run config as a dict: the preset, then the flags given (the shared ones and ``more``), then
    the ``key=value`` overrides."""
    from ..config import apply_overrides, load_preset

    base: dict[str, Any] = load_preset(args.preset) if args.preset else {}
    flags = {"dataset": args.dataset, "method": args.method, "ipc": args.ipc, "iterations": args.iterations,
             "seed": args.seed, "device": args.device, "data_root": args.root, **more}
    base.update({k: v for k, v in flags.items() if v is not None})
    return apply_overrides(base, args.overrides)


def _protocol(name: str | None, overrides: list[str], default: str):
    from ..config import ConfigError, apply_overrides
    from ..evaluation import get_protocol

    fields = apply_overrides({}, overrides)
    try:
        return get_protocol(name or default, **{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
    except (ValueError, TypeError) as e:
        raise ConfigError(str(e)) from e
