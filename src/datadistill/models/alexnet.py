"""The AlexNet of the dataset-condensation model zoo (Zhao et al., ICLR 2021) and AlexNetBN.

A small CIFAR-sized AlexNet: conv 128@5x5 (padding 4 for 1-channel inputs so 28x28 becomes
32x32, else 2), 2x2 max pool; conv 192@5x5, 2x2 max pool; conv 256@3x3; conv 192@3x3;
conv 192@3x3, 2x2 max pool; one linear classifier on the flattened features. Each conv is followed
by the norm (none for AlexNet, BatchNorm for AlexNetBN) and a ReLU. The classifier's input size is
computed from ``image_size`` (the zoo hard-codes 192*4*4, what 1x28x28 and 3x32x32 give).
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import NORMS_2D, ConvTrunk, Norm2d, check_choice, check_spatial, conv_out, norm2d
from .registry import register_model, register_preset

# (out channels, kernel, padding, max pool after?)
_LAYERS = ((128, 5, 2, True), (192, 5, 2, True), (256, 3, 1, False), (192, 3, 1, False), (192, 3, 1, True))


class AlexNet(ConvTrunk):
    def __init__(self, in_channels: int, num_classes: int, image_size: tuple[int, int], norm: Norm2d = "none") -> None:
        super().__init__()
        check_choice("AlexNet", "norm", norm, NORMS_2D)
        layers: list[nn.Module] = []
        c, (h, w) = in_channels, image_size
        for i, (out, k, pad, pool) in enumerate(_LAYERS):
            if i == 0 and in_channels == 1:
                pad = 4
            layers.append(nn.Conv2d(c, out, kernel_size=k, padding=pad))
            if norm != "none":  # keep the zoo's layer indices for the plain AlexNet
                layers.append(norm2d(norm, out))
            layers.append(nn.ReLU(inplace=True))
            c, h, w = out, conv_out(h, k, 1, pad), conv_out(w, k, 1, pad)
            if pool:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                h, w = h // 2, w // 2
        check_spatial("AlexNet", image_size, (h, w))
        self.features = nn.Sequential(*layers)
        self.num_features = c * h * w
        self.fc = nn.Linear(self.num_features, num_classes)

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:  # ``fc``: the DC zoo's state-dict name
        return self.fc(f)


@register_model("alexnet", "AlexNet")
def alexnet(in_channels: int, num_classes: int, image_size: tuple[int, int], norm: Norm2d = "none") -> nn.Module:
    """AlexNet of the DC zoo; AlexNetBN is a preset of this builder."""
    return AlexNet(in_channels, num_classes, image_size, norm)


register_preset("alexnet_bn", alexnet, "AlexNetBN", norm="batchnorm")
