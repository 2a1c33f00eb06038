"""The networks a DD set is evaluated from: the one fixed theta_0 it was distilled for, a pool's
networks (pretrained settings), or fresh ones (``random``: None), for a run (`DD.eval_networks`)
and rebuilt from a distilled file's ``net_init`` metadata (`networks_from_meta`)."""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from ...config import ConfigError
from ...models import MODELS, create_model
from .pools import Pool, PoolError, PoolNets


class Fixed:
    """The fixed setting's evaluation network: always the one theta_0 (``len`` 1: replaying the same
    steps on the same network twice only repeats a number)."""

    def __init__(self, model: str, seed: int, spec, weight_init: str) -> None:
        self.model, self.seed, self.spec, self.weight_init = model, seed, spec, weight_init

    def __len__(self) -> int:
        return 1

    def __call__(self, i: int, name: str) -> nn.Module:
        if MODELS.canonical(name) != MODELS.canonical(self.model):
            raise ConfigError(f"this set was distilled for one fixed initialization of {self.model!r}; it cannot be "
                              f"evaluated on {name!r} (distill with method_config.net_init=random for that)")
        s = self.spec
        return create_model(self.model, s.channels, s.num_classes, s.image_size, seed=self.seed,
                            weight_init=self.weight_init)


def fixed_init(model: str, seed: int, spec, weight_init: str = "default") -> Fixed:
    """Evaluation networks for the fixed setting: always the theta_0 the data were distilled for."""
    return Fixed(model, seed, spec, weight_init)


def networks_from_meta(meta: dict[str, Any], spec) -> Callable[[int, str], nn.Module] | None:
    """The evaluation networks a distilled file asks for (``net_init`` in its metadata)."""
    info = meta.get("net_init")
    if not info or info.get("setting") == "random":
        return None
    if info.get("setting") == "fixed":
        return fixed_init(info["model"], int(info["seed"]), spec, info.get("weight_init", "default"))
    try:
        pool = Pool(info["pool"])
    except PoolError as e:
        raise ConfigError(f"this set was distilled from the pretrained pool {info.get('pool')}, which is not "
                          f"readable here: {e}") from e
    pool.check_fits(spec)
    return PoolNets.for_setting(pool, info["setting"])
