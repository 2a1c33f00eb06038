"""The real-image baselines of Dataset Distillation (Wang et al. 2018, Table 1): per class, the
``kmeans`` centroids or the ``average`` image, as image initializations of DD's steps; with
``learn_images=false`` only the step sizes are then learned on them."""

from __future__ import annotations

import torch

from ...config import ConfigError

IMAGE_INITS = ("noise", "real", "kmeans", "average")  # the last three are the paper's baselines


def kmeans(x: torch.Tensor, k: int, generator: torch.Generator, iterations: int = 30) -> torch.Tensor:
    """Lloyd's k-means on flattened rows (k-means++ seeding); returns the k centroids, ordered by
    cluster size (largest first). An empty cluster keeps its previous centroid."""
    flat = x.flatten(1)
    n = flat.shape[0]
    if k > n:
        raise ValueError(f"k-means: {k} centroids from {n} points")
    centers = flat[torch.randint(n, (1,), generator=generator)]
    for _ in range(1, k):
        d = torch.cdist(flat, centers).min(1).values ** 2
        probs = d / d.sum() if float(d.sum()) > 0 else torch.full_like(d, 1 / n)
        centers = torch.cat([centers, flat[torch.multinomial(probs.cpu(), 1, generator=generator).to(flat.device)]])
    for _ in range(iterations):
        assign = torch.cdist(flat, centers).argmin(1)
        new = torch.zeros_like(centers).index_add_(0, assign, flat)
        counts = torch.bincount(assign, minlength=k).to(flat.dtype)
        keep = counts == 0
        new = new / counts.clamp(min=1).unsqueeze(1)
        new[keep] = centers[keep]
        if torch.allclose(new, centers):
            break
        centers = new
    sizes = torch.bincount(torch.cdist(flat, centers).argmin(1), minlength=k)
    return centers[sizes.argsort(descending=True, stable=True)].view(k, *x.shape[1:])


def baseline_images(kind: str, real, ipc: int, generator: torch.Generator) -> torch.Tensor:
    """The paper's real-image baselines, ``ipc`` per class, class-major ``[C*ipc, ...]``:
    ``kmeans`` centroids of each class, or ``average``, the class's mean image repeated ``ipc`` times."""
    out = []
    for c in range(real.num_classes):
        xc = real.images[real.class_indices(c)]
        if kind == "kmeans":
            out.append(kmeans(xc, ipc, generator))
        elif kind == "average":
            out.append(xc.mean(0, keepdim=True).expand(ipc, *xc.shape[1:]))
        else:
            raise ConfigError(f"dd: unknown image initialization {kind!r}; valid: {', '.join(IMAGE_INITS)}")
    return torch.cat(out)
