"""Configs are data: YAML presets plus ``key=value`` overrides, validated into frozen dataclasses.

Unknown keys fail with the key's name and the valid ones; values are parsed as YAML scalars
(``iterations=200``, ``eval.augment=dsa``, ``eval.decay_at=[0.5]``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import yaml

from .errors import UserError


class ConfigError(UserError, ValueError):
    """A config value or key is invalid; the message says which and what is valid."""


class DeprecatedKeyWarning(FutureWarning):
    """An old config key or flag was used; it still works, under its new name. Shown to users
    (a `FutureWarning`, not a hidden `DeprecationWarning`), on one line by the CLI."""


def deprecated(old: str, new: str, where: str = "") -> None:
    """Say once per call site that ``old`` is now ``new`` (one line, category `DeprecatedKeyWarning`)."""
    at = f" in {where}" if where else ""
    warnings.warn(f"{old!r}{at} is deprecated; use {new!r} (the old name still works for now)",
                  DeprecatedKeyWarning, stacklevel=3)


def renamed_keys(cls: type) -> dict[str, str]:
    """``cls.RENAMED``: old key -> new key, for configs whose keys were renamed (`from_dict` maps them)."""
    return dict(getattr(cls, "RENAMED", {}) or {})


def new_names(cls: type, d: dict[str, Any]) -> dict[str, Any]:
    """``d`` with the old keys of ``cls.RENAMED`` under their new names, silently (for comparing a
    saved config with one asked for; loading goes through `from_dict`, which says so)."""
    renamed = renamed_keys(cls)
    return {renamed.get(k, k): v for k, v in d.items()}


def rename_keys(cls: type, d: dict[str, Any], where: str = "") -> dict[str, Any]:
    """``d`` with the old keys of ``cls.RENAMED`` under their new names (each with a deprecation
    message). Both an old key and its new one given is an error: which one was meant is unclear."""
    out = dict(d)
    for old, new in renamed_keys(cls).items():
        if old in out:
            if new in out:
                raise ConfigError(f"{where or cls.__name__}: both {old!r} (deprecated) and {new!r} are given; "
                                  f"keep only {new!r}")
            deprecated(old, new, where or cls.__name__)
            out[new] = out.pop(old)
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError as e:
        raise ConfigError(f"config file not found: {path}") from e
    except IsADirectoryError as e:
        raise ConfigError(f"config file {path} is a folder; give a .yaml file") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not a text (YAML) file") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {yaml_problem(e)}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level")
    return data


def yaml_problem(e: yaml.YAMLError) -> str:
    """PyYAML's several-line message as one line: the problem and where (line and column, 1-based)."""
    mark = getattr(e, "problem_mark", None)
    what = getattr(e, "problem", None) or str(e).splitlines()[0]
    return f"{what} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else what


def preset_names() -> list[str]:
    folder = resources.files("datadistill") / "configs"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_preset(name: str) -> dict[str, Any]:
    """A preset shipped with the package (``configs/NAME.yaml``) or a path to a YAML file."""
    if name.endswith((".yaml", ".yml")) or "/" in name:
        return load_yaml(name)
    names = preset_names()
    if name not in names:
        raise ConfigError(f"unknown preset {name!r}; valid presets: {', '.join(names)} (or a path to a .yaml file)")
    return load_yaml(Path(str(resources.files("datadistill") / "configs" / f"{name}.yaml")))


def apply_overrides(d: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``d`` with dotted ``key=value`` overrides applied."""
    out = _deepcopy(d)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: cannot parse the value as YAML: "
                              f"{yaml_problem(e)}") from e
        parts = key.strip().split(".")
        node = out
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {item!r}: {p!r} is not a section")
            node = nxt
        node[parts[-1]] = value
    return out


def _deepcopy(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _deepcopy(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_deepcopy(v) for v in d]
    return d


def from_dict(cls: type, d: dict[str, Any] | None, where: str = "") -> Any:
    """Build dataclass ``cls`` from ``d``; unknown keys and wrongly typed values are errors."""
    label = where or cls.__name__
    d = rename_keys(cls, dict(d or {}), label)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {label}; valid keys: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {k: coerce_value(v, hints[k], f"{label}.{k}") for k, v in d.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{label}: {e}") from e


def coerce_value(value: Any, tp: Any, where: str) -> Any:
    """``value`` as type ``tp`` (a config field's type), or a `ConfigError` naming ``where``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce_value(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        if len(errors) == 1 and type(None) in args:  # Optional[X]: X's own message
            msg = errors[0]
            raise ConfigError(msg.replace(", got ", " or null, got ", 1) if ", got " in msg else f"{msg} (or null)")
        raise ConfigError(f"{where}: {value!r} does not fit {tp}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (tuple, list):
        if isinstance(value, (int, float, str)):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [coerce_value(v, inner, where) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e30 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


@dataclass(frozen=True)
class RunConfig:
    """One distillation run. ``method_config`` and ``eval`` are validated against the method's
    ``Config`` and `EvalProtocol` when the run is resolved."""

    RENAMED: ClassVar[dict[str, str]] = {"init": "image_init"}  # old key -> new key (`from_dict`)

    dataset: str = "mnist"
    dataset_options: dict = field(default_factory=dict)
    data_root: str | None = None
    # ZCA whitening with this regularization (MTT's CIFAR: 0.1); None: off; "auto": the method's own
    # default (`MethodEntry.zca`: HaBa whitens as its authors do, every other method does not)
    zca: float | str | None = "auto"
    method: str = "dm"
    ipc: int = 10
    iterations: int | None = None  # None: the method's default
    # how the set's images start: "real" or "noise" (some methods offer more); None: the method's default
    image_init: str | None = None
    seed: int = 0
    device: str = "auto"
    eval_every: int = 0  # 0: evaluate only at the end
    eval_models_during: int = 1  # models per intermediate evaluation
    checkpoint_every: int = 50
    models: tuple[str, ...] = ()  # cross-architecture evaluation at the end; () = eval.model only
    method_config: dict = field(default_factory=dict)
    eval: dict = field(default_factory=dict)  # {"preset": "dc", **EvalProtocol fields}

    def __post_init__(self) -> None:
        """Ranges of the plain fields; names (dataset, method, models ...) are checked by the resolver
        (`resolve.resolve`), sizes that depend on the data by `resolve.check_run`."""
        bad = [f"{name} must be {rule}, got {value!r}" for name, value, ok, rule in (
            ("ipc", self.ipc, self.ipc >= 1, ">= 1 (images per class)"),
            ("iterations", self.iterations, self.iterations is None or self.iterations >= 0,
             ">= 0 or null (the method's default)"),
            ("eval_every", self.eval_every, self.eval_every >= 0, ">= 0 (0: evaluate only at the end)"),
            ("eval_models_during", self.eval_models_during, self.eval_models_during >= 1, ">= 1"),
            ("checkpoint_every", self.checkpoint_every, self.checkpoint_every >= 0,
             ">= 0 (0: checkpoint only at the end)"),
            ("zca", self.zca, self.zca in (None, "auto") or (not isinstance(self.zca, str) and 0 < self.zca < float("inf")),
             "a positive regularization (MTT uses 0.1), null for no whitening or auto (the method's default)"),
        ) if not ok]
        if bad:
            raise ConfigError("; ".join(bad))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["models"] = list(self.models)
        return d
