"""The model registry and `create_model`.

Every builder has the signature ``(in_channels, num_classes, image_size, **kw) -> nn.Module`` and
the module exposes ``forward_features(x) -> [N, D]`` and ``forward_head(f) -> logits``; ``forward``
is their composition. Builders are pure construction: they never move to a device.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
from torch import nn

from ..registry import Registry
from ..seeding import derive_seed

ModelBuilder = Callable[..., nn.Module]

MODELS: Registry[ModelBuilder] = Registry("model")


def register_model(name: str, *aliases: str) -> Callable[[ModelBuilder], ModelBuilder]:
    return MODELS.register(name, *aliases)


def register_preset(name: str, builder: ModelBuilder, *aliases: str, **preset: Any) -> None:
    """Register ``name`` as ``builder`` with fixed keyword arguments (timm-style presets)."""

    def build(in_channels: int, num_classes: int, image_size: tuple[int, int], **kw: Any) -> nn.Module:
        return builder(in_channels, num_classes, image_size, **{**preset, **kw})

    build.__name__ = name
    build.__doc__ = f"{builder.__name__} with {preset}"
    build.preset = preset  # type: ignore[attr-defined]
    build.base = builder  # type: ignore[attr-defined]
    MODELS.add(name, build, aliases=aliases)


def create_model(
    name: str,
    in_channels: int,
    num_classes: int,
    image_size: tuple[int, int] | int,
    seed: int | None = None,
    weight_init: str = "default",
    **kw: Any,
) -> nn.Module:
    """Build a registered model on the CPU.

    With ``seed`` the initial weights are a deterministic function of it; the global RNG is left
    exactly as it was (construction runs under ``torch.random.fork_rng``). ``weight_init`` picks the
    initialization distribution (see `WEIGHT_INITS`): ``default`` is PyTorch's per-layer default.
    """
    builder = MODELS.get(name)
    scheme = WEIGHT_INITS.get(weight_init)
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    _check_kwargs(name, builder, kw)
    if seed is None:
        return scheme(builder(in_channels, num_classes, tuple(image_size), **kw))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "model-init"))
        return scheme(builder(in_channels, num_classes, tuple(image_size), **kw))


def _default_init(net: nn.Module) -> nn.Module:
    return net


def _xavier_init(net: nn.Module) -> nn.Module:
    """Xavier-normal weights (gain 1) and zero biases in every conv and linear layer, as the Dataset
    Distillation code initializes its networks (its default ``--init xavier --init_param 1``)."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.ConvTranspose2d)):
            nn.init.xavier_normal_(m.weight, gain=1.0)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return net


def _kaiming_init(net: nn.Module) -> nn.Module:
    """Kaiming-normal weights (fan-in, ReLU gain) and zero biases in conv and linear layers."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return net


def _lecun_init(net: nn.Module) -> nn.Module:
    """flax's defaults (``lecun_normal`` kernels, zero biases) in conv and linear layers, as FRePo's
    JAX code initializes its networks: a normal of variance 1 / fan_in truncated at two standard
    deviations (the scale corrected for the truncation, as jax's ``variance_scaling``)."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.ConvTranspose2d)):
            fan_in = m.weight[0].numel() if not isinstance(m, nn.ConvTranspose2d) else m.weight[:, 0].numel()
            std = (1.0 / fan_in) ** 0.5 / 0.87962566103423978
            nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return net


WEIGHT_INITS: Registry[Callable[[nn.Module], nn.Module]] = Registry("weight initialization")
WEIGHT_INITS.add("default", _default_init)
WEIGHT_INITS.add("xavier", _xavier_init)
WEIGHT_INITS.add("kaiming", _kaiming_init)
WEIGHT_INITS.add("lecun", _lecun_init)


def _check_kwargs(name: str, builder: ModelBuilder, kw: dict[str, Any]) -> None:
    base = getattr(builder, "base", builder)
    params = inspect.signature(base).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    valid = [p for p in params if p not in ("in_channels", "num_classes", "image_size")]
    bad = sorted(set(kw) - set(valid))
    if bad:
        raise TypeError(f"model {name!r} takes no option(s) {bad}; valid options: {', '.join(valid) or 'none'}")


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
