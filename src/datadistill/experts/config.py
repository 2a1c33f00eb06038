"""How expert trajectories are trained (`ExpertConfig`) and which of its fields define them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..cache import keyed_dir
from ..errors import UserError
from ..registry import UnknownNameError
from ..seeding import derive_seed

AUGMENTS = ("dsa", "none")

# Fields that change what expert i's trajectory is. n_experts and epochs only say how many experts
# and how long each one is; seed picks which draws (compared when training more into a folder).
# The sharpness-aware fields count only when ``sam_rho`` is set (`trajectory_key`), so the folders
# of plain experts keep their names.
SAM_FIELDS = ("sam_rho", "sam_alpha", "sam_adaptive")
TRAJECTORY_FIELDS = ("dataset", "model", "lr", "momentum", "weight_decay", "batch_size", "augment", "dsa_strategy",
                     "zca", "dataset_options", *SAM_FIELDS)
# Fields every expert in one folder shares (a folder is one buffer; only n_experts may grow).
FOLDER_FIELDS = (*TRAJECTORY_FIELDS, "seed", "epochs")


class ExpertError(UserError, ValueError):
    """Expert trajectories are missing, were trained differently, or the request is invalid."""


@dataclass(frozen=True)
class ExpertConfig:
    """MTT's buffer step (Cazenavette et al. 2022, ``buffer.py``): ``n_experts`` networks trained on the
    real training set with plain SGD (lr 0.01, no momentum, no weight decay, batch 256) and DSA, their
    parameters stored at the start and after each of ``epochs`` epochs.

    ``model`` and ``dataset`` accept any registered name or alias (``ConvNet``, ``CIFAR10``) and are
    stored canonical. ``zca`` is the regularization of ZCA whitening applied to the data first
    (``None``: no whitening). ``dataset_options`` are passed to `load_dataset`.

    ``sam_rho`` (None: plain SGD) trains with FTD's sharpness-aware steps (`train.sam`, Du et al.
    2023), as DATM's experts are trained: ascent radius ``sam_rho`` (the DATM README: 0.01),
    orthogonal correction ``sam_alpha`` (README: 0.3; the script's default 0.4), ``sam_adaptive``
    (always on in the reference).
    """

    dataset: str
    model: str = "convnet"
    n_experts: int = 10
    epochs: int = 20
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 256
    augment: str = "dsa"
    dsa_strategy: str = "color_crop_cutout_flip_scale_rotate"
    zca: float | None = None
    seed: int = 0
    dataset_options: dict[str, Any] = field(default_factory=dict)
    sam_rho: float | None = None
    sam_alpha: float = 0.3
    sam_adaptive: bool = True

    def __post_init__(self) -> None:
        from ..augment import parse_strategy
        from ..data import DATASETS
        from ..models import MODELS

        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen dataclass)
        try:
            set_("dataset", DATASETS.canonical(self.dataset))
            set_("model", MODELS.canonical(self.model))
        except UnknownNameError as e:
            raise ExpertError(str(e)) from e
        for name in ("n_experts", "epochs", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ExpertError(f"{name} must be a positive integer, got {v!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ExpertError(f"seed must be an integer, got {self.seed!r}")
        for name, ok in (("lr", lambda v: v > 0), ("momentum", lambda v: 0 <= v < 1),
                         ("weight_decay", lambda v: v >= 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not ok(v):
                raise ExpertError(f"{name}={v!r} is out of range (need lr > 0, 0 <= momentum < 1, weight_decay >= 0)")
            set_(name, float(v))
        if self.augment not in AUGMENTS:
            raise ExpertError(f"unknown augment {self.augment!r}; valid: {', '.join(AUGMENTS)}")
        if self.augment == "dsa":
            try:
                parse_strategy(self.dsa_strategy)
            except ValueError as e:
                raise ExpertError(f"dsa_strategy: {e}") from e
        if self.zca is not None:
            if isinstance(self.zca, bool) or not isinstance(self.zca, (int, float)) or self.zca <= 0:
                raise ExpertError(f"zca is the ZCA regularization, a positive number (or None), got {self.zca!r}")
            set_("zca", float(self.zca))
        if self.sam_rho is not None:
            for name in ("sam_rho", "sam_alpha"):
                v = getattr(self, name)
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < float("inf"):
                    raise ExpertError(f"{name} must be a number >= 0, got {v!r}")
                set_(name, float(v))
            if not isinstance(self.sam_adaptive, bool):
                raise ExpertError(f"sam_adaptive must be true or false, got {self.sam_adaptive!r}")
        elif (self.sam_alpha, self.sam_adaptive) != (0.3, True):
            raise ExpertError("sam_alpha and sam_adaptive shape the sharpness-aware steps: set sam_rho too "
                              "(e.g. --sam 0.01), or leave them at their defaults")
        if not isinstance(self.dataset_options, dict):
            raise ExpertError(f"dataset_options must be a dict, got {self.dataset_options!r}")
        set_("dataset_options", dict(self.dataset_options))

    def expert_seed(self, i: int) -> int:
        """Expert ``i``'s seed: a function of (seed, i) only, so experts can be trained anywhere, in any order."""
        return derive_seed(self.seed, "expert", i)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ExpertConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ExpertError(f"expert config has unknown field(s) {unknown}: written by another datadistill version?")
        return cls(**d)


def trajectory_key(cfg: ExpertConfig) -> dict[str, Any]:
    """The fields that define expert i's trajectory (the strategy only when DSA is on, the
    sharpness-aware settings only when ``sam_rho`` is set)."""
    key = {name: getattr(cfg, name) for name in TRAJECTORY_FIELDS if cfg.sam_rho is not None or name not in SAM_FIELDS}
    if cfg.augment != "dsa":
        key["dsa_strategy"] = None
    return key


def config_diff(stored: ExpertConfig, requested: ExpertConfig, names: tuple[str, ...] = TRAJECTORY_FIELDS) -> list[str]:
    """``"field: stored X vs requested Y"`` for each of ``names`` that differ (strategy ignored without DSA)."""
    a = {**trajectory_key(stored), **{n: getattr(stored, n) for n in names if n not in TRAJECTORY_FIELDS}}
    b = {**trajectory_key(requested), **{n: getattr(requested, n) for n in names if n not in TRAJECTORY_FIELDS}}
    both_dsa = stored.augment == requested.augment == "dsa"
    return [f"{n}: stored {a.get(n)!r} vs requested {b.get(n)!r}" for n in names
            if a.get(n) != b.get(n) and (n != "dsa_strategy" or both_dsa)]


def default_experts_dir(cfg: ExpertConfig) -> Path:
    """``~/.cache/datadistill/experts/<dataset>-<model>-<hash of the trajectory-defining fields>``.

    Buffers that differ only in ``n_experts``, ``epochs`` or ``seed`` share the folder name; training
    into it with another ``epochs`` or ``seed`` is refused (`train_experts`)."""
    return keyed_dir("experts", f"{cfg.dataset}-{cfg.model}", trajectory_key(cfg))
