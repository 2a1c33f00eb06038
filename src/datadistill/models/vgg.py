"""The VGG11 of the dataset-condensation model zoo (Zhao et al., ICLR 2021) and VGG11BN.

cfg ``[64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M]``: each number is a 3x3 conv
(padding 3 on the first conv of 1-channel inputs, so 28x28 becomes 32x32; else 1), the norm and a
ReLU; ``M`` is a 2x2 max pool. The zoo's "instancenorm" is ``GroupNorm(C, C)`` with affine
parameters. The classifier is ``Linear(512 * H' * W', classes)`` with ``H' x W'`` the final map
computed from ``image_size`` (1x1 for 32x32 inputs, where it equals the zoo's ``Linear(512)``).
The zoo's trailing ``AvgPool2d(1, 1)`` is the identity and is left out.
"""

from __future__ import annotations

from torch import nn

from .layers import NORMS_2D, ConvTrunk, Norm2d, check_choice, check_spatial, conv_out, norm2d
from .registry import register_model, register_preset

VGG11_CFG: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG(ConvTrunk):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: tuple[int, int],
        cfg: tuple[int | str, ...] = VGG11_CFG,
        norm: Norm2d = "instancenorm",
    ) -> None:
        super().__init__()
        check_choice("VGG", "norm", norm, NORMS_2D)
        layers: list[nn.Module] = []
        c, (h, w) = in_channels, image_size
        for i, v in enumerate(cfg):
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                h, w = h // 2, w // 2
                continue
            pad = 3 if in_channels == 1 and i == 0 else 1
            layers += [nn.Conv2d(c, int(v), kernel_size=3, padding=pad), norm2d(norm, int(v)), nn.ReLU(inplace=True)]
            c, h, w = int(v), conv_out(h, 3, 1, pad), conv_out(w, 3, 1, pad)
        check_spatial("VGG", image_size, (h, w))
        self.features = nn.Sequential(*layers)
        self.num_features = c * h * w
        self.classifier = nn.Linear(self.num_features, num_classes)


@register_model("vgg11", "VGG11")
def vgg11(in_channels: int, num_classes: int, image_size: tuple[int, int], norm: Norm2d = "instancenorm") -> nn.Module:
    """VGG11 of the DC zoo (instance norm); VGG11BN is a preset of this builder."""
    return VGG(in_channels, num_classes, image_size, VGG11_CFG, norm)


register_preset("vgg11_bn", vgg11, "VGG11BN", norm="batchnorm")
