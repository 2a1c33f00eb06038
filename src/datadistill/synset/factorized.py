"""`FactorizedSet`: HaBa's factorized synthetic set (Liu, Wang, Yang, Ye, Wang, "Dataset Distillation
via Factorization", NeurIPS 2022).

The set stores ``bases_per_class`` learnable base images per class and ``n_hallucinators`` small
networks shared by all classes; every (hallucinator, base) pair is a training image
``x = H_h(b)`` labelled with the base's class.

Hallucinator (Fig. 3 right of the paper; ``StyleTranslator`` in the released code,
github.com/Huage001/DatasetFactorization, utils.py)::

    enc: Conv2d(in, hidden, k, no padding)             [in, h, w] -> [hidden, h-k+1, w-k+1]
    z  = scale * enc(b) + shift                         scale, shift: one value per (channel, position)
    dec: ConvTranspose2d(hidden, out, k, no padding)   -> [out, h, w]

No activation and no normalization, so a hallucinator is an affine map of its base. The released
code uses ``k = 3`` and ``hidden = out =`` the image's channels, scale initialized to 1 and shift to
0, and PyTorch's default initialization of the two convolutions: a hallucination does *not* start
close to its base (it starts as a random 3x3 filtering of it). Five hallucinators by default
(``--n_style 5``).

``init="identity"`` (ours, not the paper's; `HallucinatorConfig.init`) starts each hallucinator
near the identity instead: both kernels are a centred delta per channel plus ``0.1 x`` their default
initialization (so the hallucinators differ), biases ``0.1 x`` theirs. Without padding the map
passes the interior through and leaves a one-pixel border at about zero. A hallucinated set then
starts where a pixel set initialized from the same real images starts, instead of from random
filterings of them. That matters when the distillation budget is a few hundred iterations rather
than the paper's thousands.

Example order: base-major, then hallucinator: example ``i`` is hallucinator ``i % H`` applied to
base ``i // H``, and bases are stored class by class (base ``k`` is base ``k % B`` of class
``k // B``). So class ``c`` holds examples ``c*B*H .. (c+1)*B*H - 1``: ``examples_per_class = B * H``
images per class the set can produce. ``ipc`` is, as everywhere, the storage budget in images per
class the set is compared at (HaBa: the run's ``--ipc``); a set built without one reports the images
per class its storage fills, rounded up.

``norm="base"`` (ours, not the paper's; `HallucinatorConfig.norm`) rescales every hallucination to
its base's mean and standard deviation (one scalar each per image, over channels and pixels). The
released hallucinator has no normalization, and the instance-normalized ConvNet that HaBa distils
with cannot see a per-image scale: its first convolution is followed by instance normalization, which
divides the scale out (and removes a constant shift up to the zero-padded border). So nothing in
the distillation loss holds a hallucination's scale, and it drifts: gradients through a
scale-invariant network are orthogonal to its input, so every step grows the hallucinators' weights,
the more so the larger the hallucinators' learning rate. The ConvNet trained on such hallucinations
does not mind; networks without normalization layers (MLP, LeNet) train badly or not at all on them,
and DSA's colour augmentations (additive brightness, contrast around the mean) fade to nothing at
that scale. With ``norm="base"`` the hallucination keeps its base's scale; to the instance-normalized
ConvNet it differs from the released one only by a constant shift (which that normalization also
removes, except along the zero-padded border). What this gains or costs at each hallucinator
learning rate is measured in the benchmark records (docs/methods/haba.md).

Evaluation semantics (``batches``, as the released code's evaluation dataset): one epoch shows every
base once, each through a hallucinator drawn at random per base and per epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from ..data.spec import DatasetSpec, LoadedDataset, RealData
from ..models.layers import check_choice
from ..seeding import init_module_
from .base import SYNSETS, SetFeatures

Size = tuple[int, int]


class Hallucinator(nn.Module):
    """Encoder conv -> learned per-position scale and shift -> transposed-conv decoder (see module doc)."""

    def __init__(self, in_channels: int, out_channels: int, image_size: Size, kernel_size: int = 3,
                 hidden_channels: int | None = None, norm: str = "none") -> None:
        super().__init__()
        check_choice("hallucinator", "norm", norm, HALLUCINATOR_NORMS)
        self.norm = norm
        h, w = image_size
        if kernel_size < 1 or kernel_size > min(h, w):
            raise ValueError(f"hallucinator kernel_size must be in 1..{min(h, w)} for {h}x{w} images, "
                             f"got {kernel_size}")
        hidden = hidden_channels or out_channels
        self.in_channels, self.out_channels, self.hidden_channels = in_channels, out_channels, hidden
        self.image_size, self.kernel_size = (h, w), kernel_size
        self.enc = nn.Conv2d(in_channels, hidden, kernel_size)
        inner = (1, hidden, h - kernel_size + 1, w - kernel_size + 1)
        self.scale = nn.Parameter(torch.ones(inner))
        self.shift = nn.Parameter(torch.zeros(inner))
        self.dec = nn.ConvTranspose2d(hidden, out_channels, kernel_size)

    def reset_parameters(self) -> None:
        """Scale 1 and shift 0 (the convolutions reset themselves)."""
        with torch.no_grad():
            self.scale.fill_(1.0)
            self.shift.zero_()

    @torch.no_grad()
    def near_identity_(self, noise: float = 0.1) -> "Hallucinator":
        """Turn the current (default-initialized) weights into ``delta + noise * weights`` (see module doc)."""
        c = self.kernel_size // 2
        for conv in (self.enc, self.dec):
            conv.weight.mul_(noise)
            conv.bias.mul_(noise)
            for ch in range(min(conv.weight.shape[:2])):  # [out, in] (conv) or [in, out] (transpose): one diagonal
                conv.weight[ch, ch, c, c] += 1.0
        return self

    def forward(self, bases: torch.Tensor) -> torch.Tensor:
        out = self.dec(self.scale * self.enc(bases) + self.shift)
        if self.norm == "base":  # the base's per-image mean and std (see the module doc)
            dims = tuple(range(1, bases.ndim))
            out_std, out_mean = torch.std_mean(out, dim=dims, keepdim=True)
            base_std, base_mean = torch.std_mean(bases, dim=dims, keepdim=True)
            out = (out - out_mean) / (out_std + 1e-6) * base_std + base_mean
        return out


@dataclass(frozen=True)
class HallucinatorConfig:
    """The hallucinator hyper-parameters and their defaults (the paper's released code).

    ``hidden_channels`` None: the image's channels. ``init``: ``default`` (the released code's) or
    ``identity`` (near-identity, see the module doc). ``norm``: ``none`` (the released code's) or
    ``base`` (each hallucination rescaled to its base's mean and std, see the module doc). HaBa's
    config carries them as flat fields and builds this (`methods.haba.factorized_settings`).
    """

    n_hallucinators: int = 5
    kernel_size: int = 3
    hidden_channels: int | None = None
    init: str = "default"
    norm: str = "none"

    def __post_init__(self) -> None:
        check_choice("hallucinator", "init", self.init, HALLUCINATOR_INITS)
        check_choice("hallucinator", "norm", self.norm, HALLUCINATOR_NORMS)
        if self.n_hallucinators < 1:
            raise ValueError(f"n_hallucinators must be >= 1, got {self.n_hallucinators}")
        if self.kernel_size < 1:
            raise ValueError(f"hallucinator kernel size must be >= 1, got {self.kernel_size}")
        if self.hidden_channels is not None and self.hidden_channels < 1:
            raise ValueError(f"hallucinator hidden channels must be >= 1, got {self.hidden_channels}")



HALLUCINATOR_INITS = ("default", "identity")
HALLUCINATOR_NORMS = ("none", "base")


def make_hallucinators(n: int, in_channels: int, out_channels: int, image_size: Size, generator: torch.Generator,
                       kernel_size: int = 3, hidden_channels: int | None = None,
                       init: str = "default", norm: str = "none") -> list[Hallucinator]:
    """``n`` hallucinators, each initialized from ``generator``: PyTorch's default conv init, or
    near the identity (``init="identity"``, see the module doc); ``norm`` as `Hallucinator`'s."""
    check_choice("hallucinator", "init", init, HALLUCINATOR_INITS)
    hals = [init_module_(Hallucinator(in_channels, out_channels, image_size, kernel_size, hidden_channels, norm),
                         generator) for _ in range(n)]
    return [h.near_identity_() for h in hals] if init == "identity" else hals


class FactorizedSet(nn.Module, SetFeatures):
    def __init__(
        self,
        bases: torch.Tensor,
        labels: torch.Tensor,
        num_classes: int,
        hallucinators: Sequence[Hallucinator],
        lr: float | None = None,
        learn_lr: bool = False,
        ipc: int | None = None,
    ) -> None:
        super().__init__()
        if bases.ndim != 4 or bases.shape[0] != labels.shape[0]:
            raise ValueError(f"need bases [N, c, h, w] and N labels, got {tuple(bases.shape)} and "
                             f"{tuple(labels.shape)}")
        counts = torch.bincount(labels.long(), minlength=num_classes)
        if counts.numel() != num_classes or not bool((counts == counts[0]).all()) or int(counts[0]) == 0:
            raise ValueError(f"FactorizedSet needs the same positive number of bases per class, got {counts.tolist()}")
        expected = torch.arange(num_classes, device=labels.device).repeat_interleave(int(counts[0]))
        if not torch.equal(labels.long(), expected):
            raise ValueError("FactorizedSet stores bases class by class: labels must be sorted by class")
        if len(hallucinators) < 1:
            raise ValueError("FactorizedSet needs at least one hallucinator")
        shape = (int(bases.shape[1]), tuple(bases.shape[2:]))
        for i, hal in enumerate(hallucinators):
            if (hal.in_channels, hal.image_size) != shape:
                raise ValueError(f"hallucinator {i} takes {hal.in_channels}x{hal.image_size} inputs, bases are "
                                 f"{shape[0]}x{shape[1]}")
        if len({(h.out_channels, h.hidden_channels, h.kernel_size, h.norm) for h in hallucinators}) != 1:
            raise ValueError("all hallucinators of a set must share one architecture")
        self.num_classes = num_classes
        self.bases_per_class = int(counts[0])
        self.n_hallucinators = len(hallucinators)
        self.examples_per_class = self.bases_per_class * self.n_hallucinators
        self.bases = nn.Parameter(bases.detach().clone().float())
        self.register_buffer("labels", labels.detach().clone().long())  # one label per base
        self.hallucinators = nn.ModuleList(hallucinators)
        if lr is not None and lr <= 0:
            raise ValueError(f"step size must be positive, got {lr}")
        # the step size is stored as its log so it stays positive under gradient steps (as PixelSet)
        self.log_lr = nn.Parameter(torch.tensor(math.log(lr)), requires_grad=learn_lr) if lr is not None else None
        if ipc is not None and ipc < 1:
            raise ValueError(f"ipc (the storage budget in images per class) must be >= 1, got {ipc}")
        per_class_image = num_classes * math.prod(self._out_shape())
        self.ipc = int(ipc) if ipc is not None else math.ceil(self.storage_numel() / per_class_image)

    # -------------------------------------------------------------------- construction
    @classmethod
    def from_bases(cls, bases: torch.Tensor, labels: torch.Tensor, num_classes: int, n_hallucinators: int,
                   generator: torch.Generator, *, out_channels: int | None = None, kernel_size: int = 3,
                   hidden_channels: int | None = None, lr: float | None = None,
                   learn_lr: bool = False, hallucinator_init: str = "default",
                   hallucinator_norm: str = "none", ipc: int | None = None) -> "FactorizedSet":
        """Given bases (class by class) plus ``n_hallucinators`` fresh hallucinators drawn from ``generator``."""
        hals = make_hallucinators(n_hallucinators, int(bases.shape[1]), out_channels or int(bases.shape[1]),
                                  tuple(bases.shape[2:]), generator, kernel_size, hidden_channels, hallucinator_init,
                                  hallucinator_norm)
        return cls(bases, labels, num_classes, hals, lr=lr, learn_lr=learn_lr, ipc=ipc)

    @classmethod
    def from_real(cls, real: RealData, bases_per_class: int, n_hallucinators: int, generator: torch.Generator,
                  **kw: Any) -> "FactorizedSet":
        """Bases: ``bases_per_class`` distinct random training images per class."""
        short = [c for c in range(real.num_classes) if real.class_count(c) < bases_per_class]
        if short:
            raise ValueError(f"classes {short} have fewer than {bases_per_class} training images")
        images, labels = real.sample_classes(bases_per_class, generator)
        return cls.from_bases(images.cpu(), labels.cpu(), real.num_classes, n_hallucinators, generator, **kw)

    @classmethod
    def from_noise(cls, spec: DatasetSpec, bases_per_class: int, n_hallucinators: int, generator: torch.Generator,
                   **kw: Any) -> "FactorizedSet":
        """Bases: standard-normal images (in normalized space)."""
        bases = torch.randn(spec.num_classes * bases_per_class, *spec.shape, generator=generator)
        labels = torch.arange(spec.num_classes).repeat_interleave(bases_per_class)
        return cls.from_bases(bases, labels, spec.num_classes, n_hallucinators, generator, **kw)

    # -------------------------------------------------------------------- HaBa's view
    def per_class(self) -> torch.Tensor:
        """``[C, B, ...]`` view of the (differentiable) bases."""
        return self.bases.view(self.num_classes, self.bases_per_class, *self.bases.shape[1:])

    def hallucinate(self, h: int, base_index: torch.Tensor) -> torch.Tensor:
        """Hallucinator ``h`` applied to the bases ``base_index`` (differentiable)."""
        return self.hallucinators[h](self.bases[base_index])

    def pair_index(self, h: torch.Tensor, base_index: torch.Tensor) -> torch.Tensor:
        """Example indices of the pairs (hallucinator ``h``, base ``base_index``)."""
        return base_index * self.n_hallucinators + h

    def sample(self, n: int, generator: torch.Generator,
               one_hallucinator: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """A differentiable batch of ``n`` distinct random bases, each through a random hallucinator.

        ``one_hallucinator``: one hallucinator for the whole batch (what the released code does in a
        distillation step) rather than one per example.
        """
        n_bases = len(self.labels)
        if not 1 <= n <= n_bases:
            raise ValueError(f"can sample 1..{n_bases} distinct bases, asked for {n}")
        base_index = torch.randperm(n_bases, generator=generator)[:n]
        size = (1,) if one_hallucinator else (n,)
        h = torch.randint(self.n_hallucinators, size, generator=generator).expand(n)
        return self(self.pair_index(h, base_index).to(self.bases.device))

    def base_parameters(self) -> list[nn.Parameter]:
        return [self.bases]

    def hallucinator_parameters(self) -> list[nn.Parameter]:
        return list(self.hallucinators.parameters())

    # -------------------------------------------------------------------- protocol
    def forward(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        index = index.to(self.bases.device).long()
        h, base = index % self.n_hallucinators, index // self.n_hallucinators
        order = torch.argsort(h, stable=True)  # group by hallucinator: one forward per hallucinator
        groups, counts = torch.unique_consecutive(h[order], return_counts=True)
        parts = [self.hallucinate(int(g), idx)
                 for g, idx in zip(groups.tolist(), torch.split(base[order], counts.tolist()))]
        x = torch.cat(parts) if parts else self.bases.new_empty(0, *self._out_shape())
        return x[torch.argsort(order)], self.labels[base]

    def __len__(self) -> int:
        return int(self.bases.shape[0]) * self.n_hallucinators

    def class_index(self, c: int) -> torch.Tensor:
        k = self.examples_per_class
        return torch.arange(c * k, (c + 1) * k, device=self.bases.device)

    def batches(self, batch_size: int, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch: every base once, shuffled, each through a hallucinator drawn for it this epoch."""
        n = len(self.labels)
        perm = torch.randperm(n, generator=generator)
        h = torch.randint(self.n_hallucinators, (n,), generator=generator)
        index = self.pair_index(h, perm).to(self.bases.device)
        for i in range(0, n, batch_size):
            yield self(index[i : i + batch_size])

    @torch.no_grad()
    def materialize(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All ``H * C * B`` hallucinations in example order (base-major), detached."""
        x = torch.stack([hal(self.bases) for hal in self.hallucinators], dim=1)  # [C*B, H, ...]
        return x.flatten(0, 1).detach().clone(), self.labels.repeat_interleave(self.n_hallucinators)

    def storage_numel(self) -> int:
        lr = 1 if self.log_lr is not None and self.log_lr.requires_grad else 0
        return int(self.bases.numel()) + sum(p.numel() for p in self.hallucinators.parameters()) + lr

    def storage_ratio(self) -> float:
        """Stored floats (`storage_numel`: bases, hallucinators, a learned step size) over the floats of
        a plain set of ``ipc`` images per class (the budget it is compared at)."""
        return self.storage_numel() / (self.ipc * self.num_classes * math.prod(self._out_shape()))

    def learned_lr(self) -> float | None:
        return float(self.log_lr.detach().exp()) if self.log_lr is not None else None

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"bases": self.bases.detach(), "labels": self.labels}
        for h, hal in enumerate(self.hallucinators):
            out.update({f"hallucinators.{h}.{k}": v.detach() for k, v in hal.state_dict().items()})
        if self.log_lr is not None:
            out["log_lr"] = self.log_lr.detach().reshape(1)
        return out

    def config(self) -> dict[str, Any]:
        hal = self.hallucinators[0]
        return {"num_classes": self.num_classes, "bases_per_class": self.bases_per_class,
                "n_hallucinators": self.n_hallucinators, "ipc": self.ipc,
                "examples_per_class": self.examples_per_class, "out_channels": hal.out_channels,
                "kernel_size": hal.kernel_size, "hidden_channels": hal.hidden_channels, "hallucinator_norm": hal.norm,
                "learn_lr": bool(self.log_lr is not None and self.log_lr.requires_grad)}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> "FactorizedSet":
        bases = tensors["bases"]
        n = int(config["n_hallucinators"])
        hals = [Hallucinator(int(bases.shape[1]), int(config["out_channels"]), tuple(bases.shape[2:]),
                             int(config["kernel_size"]), int(config["hidden_channels"]),
                             str(config.get("hallucinator_norm", "none"))) for _ in range(n)]
        for h, hal in enumerate(hals):
            prefix = f"hallucinators.{h}."
            hal.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        lr = float(tensors["log_lr"].exp()) if "log_lr" in tensors else None
        # files written before ``ipc`` meant the budget stored ``bases x hallucinators`` under it (and the
        # budget in the header's ``budget_ipc``); they lack ``examples_per_class``
        ipc = int(config["ipc"]) if "examples_per_class" in config else None
        return cls(bases, tensors["labels"], int(config["num_classes"]), hals, lr=lr,
                   learn_lr=bool(config.get("learn_lr", False)), ipc=ipc)

    def _out_shape(self) -> tuple[int, ...]:
        return (self.hallucinators[0].out_channels, *self.bases.shape[2:])


SYNSETS.add("factorized", FactorizedSet)


BASES_RULES = ("ipc", "ipc-1")


def bases_for_budget(ipc: int, rule: str = "ipc") -> int:
    """Bases per class for a budget of ``ipc`` images per class.

    ``ipc`` (the authors' code, `distill_fac.py`: ``--ipc`` bases per class and the hallucinators on
    top, so the set stores more than ``ipc`` plain images: about 1.09x at 10 CIFAR-10 images per class,
    1.9x at 1); ``ipc-1`` (ours): one image per class's worth of storage is left to the hallucinators,
    ``max(1, ipc - 1)`` bases, about the storage of a plain set (except at ``ipc`` 1, where one base
    is the least there can be). `FactorizedSet.storage_ratio` states the result."""
    check_choice("factorized set", "bases_rule", rule, BASES_RULES)
    return ipc if rule == "ipc" else max(1, ipc - 1)


@dataclass(frozen=True)
class FactorizedSettings:
    """What a `FactorizedSet` is built with (`factorized_synset`): the hallucinators, the bases per
    class (None: `bases_for_budget` under ``bases_rule``) and the step size stored with the set
    (``lr`` None: none; learned unless ``learn_lr`` is false)."""

    hallucinators: HallucinatorConfig = field(default_factory=HallucinatorConfig)
    bases_per_class: int | None = None
    bases_rule: str = "ipc"
    lr: float | None = None
    learn_lr: bool = True


def factorized_synset(settings: FactorizedSettings, data: LoadedDataset, ipc: int, init: str,
                      generator: torch.Generator) -> FactorizedSet:
    """A `FactorizedSet` for ``ipc`` images per class, its bases initialized from ``init`` (``real``
    images or ``noise``)."""
    bases = settings.bases_per_class or bases_for_budget(ipc, settings.bases_rule)
    hal, lr = settings.hallucinators, settings.lr
    kw = dict(kernel_size=hal.kernel_size, hidden_channels=hal.hidden_channels, hallucinator_init=hal.init,
              hallucinator_norm=hal.norm, lr=lr, ipc=ipc, learn_lr=lr is not None and settings.learn_lr)
    if init == "real":
        return FactorizedSet.from_real(data.train, bases, hal.n_hallucinators, generator, **kw)
    if init == "noise":
        return FactorizedSet.from_noise(data.spec, bases, hal.n_hallucinators, generator, **kw)
    raise ValueError(f"factorized set: unknown initialization {init!r}; valid: real, noise")
