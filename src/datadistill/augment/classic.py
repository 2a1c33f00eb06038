"""The DC paper's evaluation-time augmentation (Zhao et al. 2021, released ``utils.augment``): one
op per image, chosen uniformly from the strategy (``crop_scale_rotate`` on MNIST, ``crop_noise``
for BatchNorm ConvNets, none otherwise: `dc_strategy`). Not differentiable; it only augments the
batches a fresh network is trained on.

* ``crop``: pad by ``crop`` pixels with each channel's batch mean, take the window at an offset
  ``(r, c)``, each uniform in ``0 .. 2*crop - 1`` (so a shift of ``-crop .. crop-1``);
* ``scale``: resize (nearest) to ``int(u * H)`` x ``int(v * H)`` with ``u, v`` uniform in
  ``[1 - scale, 1 + scale)``, centre it on a zero canvas, take the centre ``H x W``;
* ``rotate``: rotate by an integer angle in ``[-rotate, rotate)`` degrees (cubic spline, the canvas
  grown to hold the whole image, filled with the mean of the channel means), take the centre;
* ``noise``: add ``noise`` times standard normal noise.

The draws come from the caller's ``torch.Generator`` (the reference uses NumPy's global RNG): the
same distribution, reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

CLASSIC_OPS = ("crop", "scale", "rotate", "noise")


@dataclass(frozen=True)
class ClassicAugment:
    strategy: str = "crop_scale_rotate"
    crop: int = 4
    scale: float = 0.2
    rotate: int = 45
    noise: float = 0.001

    def __post_init__(self) -> None:
        bad = [op for op in self.ops if op not in CLASSIC_OPS]
        if bad:
            raise ValueError(f"unknown DC augmentation op(s) {bad} in {self.strategy!r}; valid: {', '.join(CLASSIC_OPS)}")

    @property
    def ops(self) -> tuple[str, ...]:
        return () if self.strategy in ("", "none", "None") else tuple(self.strategy.split("_"))

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """A new batch: each image of ``x`` [n, C, H, W] through one op of the strategy."""
        if not self.ops:
            return x
        n, ch, h, w = x.shape
        mean = x.mean(dim=(0, 2, 3))  # per channel, over the whole batch, before any op
        out = x.clone()
        for i in range(n):
            op = self.ops[int(torch.randint(len(self.ops), (1,), generator=g))]
            out[i] = getattr(self, f"_{op}")(x[i], mean, g)
        return out

    def _crop(self, img: torch.Tensor, mean: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        k, (_, h, w) = self.crop, img.shape
        canvas = mean.view(-1, 1, 1).expand(-1, h + 2 * k, w + 2 * k).clone()
        canvas[:, k : k + h, k : k + w] = img
        r, c = (int(v) for v in torch.randint(2 * k, (2,), generator=g))
        return canvas[:, r : r + h, c : c + w]

    def _scale(self, img: torch.Tensor, mean: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        _, h0, w0 = img.shape
        u = 1 - self.scale + 2 * self.scale * torch.rand(2, generator=g, dtype=torch.float64)
        h, w = int(float(u[0]) * h0), int(float(u[1]) * h0)  # both from the height, as the reference
        tmp = F.interpolate(img[None], size=[h, w])[0]
        m = max(h, w, h0, w0)
        canvas = torch.zeros(img.shape[0], m, m, dtype=img.dtype, device=img.device)
        r, c = int((m - h) / 2), int((m - w) / 2)
        canvas[:, r : r + h, c : c + w] = tmp
        r, c = int((m - h0) / 2), int((m - w0) / 2)
        return canvas[:, r : r + h0, c : c + w0]

    def _rotate(self, img: torch.Tensor, mean: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        from scipy.ndimage import rotate as _scipy_rotate  # noqa: PLC0415  (scipy comes with scikit-learn)

        _, h, w = img.shape
        angle = int(torch.randint(-self.rotate, self.rotate, (1,), generator=g))
        out = _scipy_rotate(img.detach().cpu().numpy(), angle=angle, axes=(-2, -1), cval=float(mean.mean()))
        r, c = int((out.shape[-2] - h) / 2), int((out.shape[-1] - w) / 2)
        return torch.as_tensor(out[:, r : r + h, c : c + w], dtype=img.dtype, device=img.device)

    def _noise(self, img: torch.Tensor, mean: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return img + self.noise * torch.randn(img.shape, generator=g, dtype=img.dtype).to(img.device)


def dc_strategy(dataset: str, model: str) -> str:
    """The DC code's ``get_daparam`` rule: MNIST is augmented with ``crop_scale_rotate``, a BatchNorm
    ConvNet with ``crop_noise`` (which wins over MNIST's), everything else not at all."""
    strategy = "crop_scale_rotate" if dataset == "mnist" else "none"
    if model == "convnet_bn":  # the canonical name (`MODELS.canonical`) of the reference's ConvNetBN
        strategy = "crop_noise"
    return strategy
