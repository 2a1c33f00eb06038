"""Small pieces shared by the model families: norm layers, option checks and output sizes."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

Norm2d = Literal["instancenorm", "batchnorm", "none"]
NORMS_2D = ("instancenorm", "batchnorm", "none")


def check_choice(model: str, kind: str, value: str, valid: tuple[str, ...]) -> str:
    """``value`` if it is one of ``valid``, else a ValueError that lists them."""
    if value not in valid:
        raise ValueError(f"unknown {model} {kind} {value!r}; valid: {', '.join(valid)}")
    return value


def norm2d(kind: str, channels: int) -> nn.Module:
    """The DC zoo's norms: "instancenorm" is ``GroupNorm(C, C)`` with affine parameters."""
    return {
        "instancenorm": lambda: nn.GroupNorm(channels, channels, affine=True),
        "batchnorm": lambda: nn.BatchNorm2d(channels),
        "none": nn.Identity,
    }[kind]()


def conv_out(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Output length of a convolution or pooling along one axis (floor mode)."""
    return (size + 2 * padding - kernel) // stride + 1


def check_spatial(model: str, image_size: tuple[int, int], hw: tuple[int, int]) -> None:
    """Fail loudly when ``image_size`` shrinks to nothing before the classifier."""
    if min(hw) < 1:
        raise ValueError(
            f"{model} cannot take {image_size[0]}x{image_size[1]} images: the feature map shrinks "
            f"to {hw[0]}x{hw[1]}; use larger images or another model"
        )


class ConvTrunk(nn.Module):
    """A model that is a conv trunk ``features``, flattened, then one linear layer ``classifier``
    (ConvNet, VGG, AlexNet): ``forward_features`` is the flattened trunk output, ``forward_head`` the
    linear layer (a subclass whose layer has another state-dict name overrides it)."""

    features: nn.Module
    classifier: nn.Module

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return self.classifier(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
