"""The ConvNet of the dataset-condensation model zoo (Zhao et al., ICLR 2021) and its variants.

Per block: 3x3 conv (padding 3 on the first block of 1-channel inputs, so 28x28 becomes 32x32 as in
the reference),
norm, activation, 2x2 pooling. The zoo's "instancenorm" is ``GroupNorm(C, C)`` with affine
parameters (not ``InstanceNorm2d``): paper numbers depend on it. Default: width 128, depth 3,
ReLU, instance norm, average pooling, one linear classifier on the flattened features.
``widen`` multiplies the width from one block to the next (FRePo's ConvNet doubles it: 128, 256, 512).
``prenorm`` moves the norm to each block's input, before its conv, with none on the first block (the
raw image): FRePo's ``Conv`` (conv, ReLU, pooling; norm on the input of blocks 2 and 3).
"""

from __future__ import annotations

from typing import Literal

from torch import nn

from ..kernels import FusedInstanceNorm, use_fused
from .layers import ConvTrunk
from .registry import register_model, register_preset

Norm = Literal["instancenorm", "batchnorm", "layernorm", "groupnorm", "none"]
Act = Literal["relu", "sigmoid", "leakyrelu"]
Pool = Literal["avgpooling", "maxpooling", "none"]

NORMS = ("instancenorm", "batchnorm", "layernorm", "groupnorm", "none")
ACTS = ("relu", "sigmoid", "leakyrelu")
POOLS = ("avgpooling", "maxpooling", "none")


def _choice(kind: str, value: str, valid: tuple[str, ...]) -> str:
    if value not in valid:
        raise ValueError(f"unknown ConvNet {kind} {value!r}; valid: {', '.join(valid)}")
    return value


def _norm(kind: str, shape: tuple[int, int, int]) -> nn.Module:
    c = shape[0]
    return {
        "instancenorm": lambda: nn.GroupNorm(c, c, affine=True),
        "batchnorm": lambda: nn.BatchNorm2d(c, affine=True),
        "layernorm": lambda: nn.LayerNorm(list(shape), elementwise_affine=True),
        "groupnorm": lambda: nn.GroupNorm(4, c, affine=True),
        "none": nn.Identity,
    }[kind]()


def _act(kind: str) -> nn.Module:
    return {"relu": lambda: nn.ReLU(inplace=True), "sigmoid": nn.Sigmoid, "leakyrelu": lambda: nn.LeakyReLU(0.01)}[kind]()


def _pool(kind: str) -> nn.Module:
    return {"avgpooling": lambda: nn.AvgPool2d(2, 2), "maxpooling": lambda: nn.MaxPool2d(2, 2), "none": nn.Identity}[kind]()


class ConvNet(ConvTrunk):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: tuple[int, int],
        width: int = 128,
        depth: int = 3,
        norm: Norm = "instancenorm",
        act: Act = "relu",
        pool: Pool = "avgpooling",
        widen: int = 1,
        prenorm: bool = False,
    ) -> None:
        super().__init__()
        _choice("norm", norm, NORMS)
        _choice("activation", act, ACTS)
        _choice("pooling", pool, POOLS)
        if depth < 1 or width < 1 or widen < 1:
            raise ValueError(f"ConvNet needs depth, width and widen >= 1, got depth={depth}, width={width}, widen={widen}")
        h, w = image_size
        layers: list[nn.Module] = []
        c = in_channels
        fused = not prenorm and (norm, act, pool) == ("instancenorm", "relu", "avgpooling") and use_fused()
        for d in range(depth):
            pad = 3 if in_channels == 1 and d == 0 else 1
            out = width * widen**d
            if prenorm and d > 0:
                layers.append(_norm(norm, (c, h, w)))
            layers.append(nn.Conv2d(c, out, kernel_size=3, padding=pad))
            h, w, c = h + 2 * pad - 2, w + 2 * pad - 2, out
            if fused and h >= 2 and w >= 2:  # one kernel for norm, ReLU and pooling; the same parameters
                layers += [FusedInstanceNorm(c), nn.Identity(), nn.Identity()]
                h, w = h // 2, w // 2
                continue
            layers += [_act(act)] if prenorm else [_norm(norm, (c, h, w)), _act(act)]
            if pool != "none":
                layers.append(_pool(pool))
                h, w = h // 2, w // 2
        self.features = nn.Sequential(*layers)
        self.num_features = c * h * w
        self.classifier = nn.Linear(self.num_features, num_classes)


@register_model("convnet", "ConvNet")
def convnet(in_channels: int, num_classes: int, image_size: tuple[int, int], width: int = 128, depth: int = 3,
            norm: Norm = "instancenorm", act: Act = "relu", pool: Pool = "avgpooling", widen: int = 1,
            prenorm: bool = False) -> nn.Module:
    """ConvNet of the DC zoo; every variant below is a preset of this builder."""
    return ConvNet(in_channels, num_classes, image_size, width, depth, norm, act, pool, widen, prenorm)


for _d in (1, 2, 3, 4, 5):
    register_preset(f"convnet_d{_d}", convnet, f"ConvNetD{_d}", depth=_d)
for _w in (32, 64, 128, 256):
    register_preset(f"convnet_w{_w}", convnet, f"ConvNetW{_w}", width=_w)
for _tag, _a in (("as", "sigmoid"), ("ar", "relu"), ("al", "leakyrelu")):
    register_preset(f"convnet_{_tag}", convnet, f"ConvNet{_tag.upper()}", act=_a)
for _tag, _n in (("nn", "none"), ("bn", "batchnorm"), ("ln", "layernorm"), ("in", "instancenorm"), ("gn", "groupnorm")):
    register_preset(f"convnet_{_tag}", convnet, f"ConvNet{_tag.upper()}", norm=_n)
for _tag, _p in (("ap", "avgpooling"), ("mp", "maxpooling"), ("np", "none")):
    register_preset(f"convnet_{_tag}", convnet, f"ConvNet{_tag.upper()}", pool=_p)
# FRePo's widths 128, 256, 512 with BatchNorm after each conv (the DC zoo's order): not the reference's network
register_preset("convnet_frepo", convnet, "ConvNetFRePo", widen=2, norm="batchnorm")
# FRePo's feature network exactly (reference code's "conv" with normalization=batch): BatchNorm on the
# inputs of blocks 2 and 3, widths 128, 256, 512
register_preset("convnet_frepo_prenorm", convnet, widen=2, norm="batchnorm", prenorm=True)
# FRePo's evaluation network (its script/eval.py: "conv", normalization "identity"): widths 128, 256, 512, no norm
register_preset("convnet_frepo_eval", convnet, widen=2, norm="none")
