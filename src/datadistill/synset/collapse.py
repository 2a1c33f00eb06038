"""HaBa's collapse diagnostic: how close each hallucination of a factorized set is to a smoothed
copy of its base (see `synset.factorized` for the set and why its hallucinations' scale drifts)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .factorized import FactorizedSet

HF_RADIUS = 0.25  # cycles per pixel: the upper half of the spatial frequencies up to Nyquist (0.5)
# a hallucinator whose hallucinations correlate with their bases at least this much on average while
# keeping at most this share of their high-frequency energy is read as a low-pass copy of its base
LOW_PASS_CORR, LOW_PASS_HF = 0.7, 0.5


def high_frequency_fraction(x: torch.Tensor, radius: float = HF_RADIUS) -> torch.Tensor:
    """The share of an image's energy above ``radius`` cycles per pixel, for images ``[..., c, h, w]``.

    Each channel minus its mean goes through the 2-D FFT; the power ``|F(u, v)|^2`` summed over the
    channels is split at the radius ``sqrt(u^2 + v^2) > radius`` (``u, v`` from ``torch.fft.fftfreq``,
    in cycles per pixel, Nyquist 0.5). Returns ``energy above / total energy`` per image (0 for a
    constant image)."""
    h, w = x.shape[-2:]
    z = x.float() - x.float().mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.fft2(z).abs().square().sum(dim=-3)  # [..., h, w]
    u, v = torch.fft.fftfreq(h, device=x.device), torch.fft.fftfreq(w, device=x.device)
    high = (u[:, None].square() + v[None, :].square()).sqrt() > radius
    return (power * high).sum(dim=(-2, -1)) / power.sum(dim=(-2, -1)).clamp_min(1e-12)


@dataclass(frozen=True)
class CollapseReport:
    """How close each hallucination is to being a smoothed copy of its base (`collapse_diagnostic`).

    ``corr[k, h]``: Pearson correlation, over all pixels and channels, of hallucination ``H_h(b_k)``
    with base ``b_k``. ``hf_ratio[k, h]``: `high_frequency_fraction` of the hallucination over that of
    its base, both above ``radius``. A fraction, not the absolute energy, because nothing in HaBa's
    loss holds a hallucination's scale (see the module doc): a scaled copy has ratio 1, a blurred copy
    less than 1, a hallucination with detail of its own 1 or more. ``labels[k]``: the base's class."""

    corr: torch.Tensor  # [bases, hallucinators]
    hf_ratio: torch.Tensor  # [bases, hallucinators]
    labels: torch.Tensor  # [bases]
    radius: float = HF_RADIUS

    def per_hallucinator(self) -> list[dict[str, float]]:
        """Each hallucinator's mean correlation and mean HF ratio over all bases."""
        return [{"corr": round(float(c), 4), "hf_ratio": round(float(r), 4)}
                for c, r in zip(self.corr.mean(0), self.hf_ratio.mean(0))]

    def of_class(self, c: int) -> list[dict[str, float]]:
        """`per_hallucinator` over the bases of class ``c`` only."""
        keep = self.labels == c
        return [{"corr": float(a), "hf_ratio": float(b)} for a, b in zip(self.corr[keep].mean(0),
                                                                         self.hf_ratio[keep].mean(0))]

    def low_pass(self) -> list[int]:
        """The hallucinators that read as low-pass copies of their bases (``LOW_PASS_CORR``/``_HF``)."""
        return [h for h, d in enumerate(self.per_hallucinator())
                if d["corr"] >= LOW_PASS_CORR and d["hf_ratio"] <= LOW_PASS_HF]

    def summary(self) -> dict[str, Any]:
        """JSON-able: mean and std over every (base, hallucinator) pair, the per-hallucinator means and
        the count of low-pass hallucinators."""
        def ms(t: torch.Tensor) -> dict[str, float]:
            return {"mean": round(float(t.mean()), 4), "std": round(float(t.std(unbiased=False)), 4)}

        return {"hallucination_corr": ms(self.corr), "hallucination_hf_ratio": ms(self.hf_ratio),
                "low_pass_hallucinators": len(self.low_pass()), "n_hallucinators": int(self.corr.shape[1]),
                "hf_radius": self.radius, "per_hallucinator": self.per_hallucinator()}

    def lines(self) -> list[str]:
        """One line per hallucinator, then the verdict."""
        low = self.low_pass()
        out = [f"h{h}: correlation with its base {d['corr']:.2f}, high-frequency ratio {d['hf_ratio']:.2f}"
               + ("  (low-pass copy of its base)" if h in low else "") for h, d in enumerate(self.per_hallucinator())]
        out.append(f"{len(low)} of {self.corr.shape[1]} hallucinators are low-pass copies of their bases "
                   f"(mean correlation >= {LOW_PASS_CORR:g} and high-frequency ratio <= {LOW_PASS_HF:g}; energy "
                   f"above {self.radius:g} cycles/pixel, as a share of each image's own)")
        return out


@torch.no_grad()
def collapse_diagnostic(synset: "FactorizedSet | str | Path", radius: float = HF_RADIUS) -> CollapseReport:
    """HaBa's collapse diagnostic (`CollapseReport`) of a factorized set, or of a distilled-set file
    holding one (any HaBa file, older ones included). Computed on the set as stored (in ZCA space for
    a whitened set: the images the networks are trained on). When the hallucinators output another
    number of channels than the bases have, both are compared through their channel means."""
    if isinstance(synset, (str, Path)):
        from .io import load_synset  # noqa: PLC0415 (io loads every set type)

        synset = load_synset(synset).synset
    if not isinstance(synset, FactorizedSet):
        raise ValueError(f"the collapse diagnostic is for factorized (HaBa) sets, got a {type(synset).__name__}")
    hal = torch.stack([h(synset.bases) for h in synset.hallucinators], dim=1)  # [N, H, c, h, w]
    return collapse_of(synset.bases, hal, synset.labels, radius)


def collapse_of(bases: torch.Tensor, hallucinations: torch.Tensor, labels: torch.Tensor,
                radius: float = HF_RADIUS) -> CollapseReport:
    """`CollapseReport` of bases ``[N, c, h, w]`` and their hallucinations ``[N, H, c', h, w]`` (the
    computation behind `collapse_diagnostic`; channel means compared when ``c != c'``)."""
    bases, hal = bases.detach().float(), hallucinations.detach().float()
    if hal.shape[2] != bases.shape[1]:
        bases, hal = bases.mean(1, keepdim=True), hal.mean(2, keepdim=True)
    a = hal.flatten(2) - hal.flatten(2).mean(-1, keepdim=True)
    b = (bases.flatten(1) - bases.flatten(1).mean(-1, keepdim=True)).unsqueeze(1)
    corr = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(1e-12)
    hf = high_frequency_fraction(hal, radius) / high_frequency_fraction(bases, radius).clamp_min(1e-12).unsqueeze(1)
    return CollapseReport(corr.cpu(), hf.cpu(), labels.detach().cpu(), radius)
