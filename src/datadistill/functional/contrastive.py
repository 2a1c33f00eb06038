"""Supervised contrastive loss (Khosla et al., NeurIPS 2020), as HaBa's feature extractor uses it."""

from __future__ import annotations

import torch


def supervised_contrastive_loss(features: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07,
                                base_temperature: float = 0.07) -> torch.Tensor:
    """``features [N, V, D]`` (V views per example, L2-normalized), ``labels [N]``.

    Every one of the ``N*V`` embeddings is an anchor; its positives are the other embeddings of the
    same label (its other views included), its contrast set all embeddings but itself:
    ``-(t / t_base) * mean_anchors mean_positives log softmax(z_a . z_p / t)``.
    """
    if features.dim() != 3:
        raise ValueError(f"features must be [N, views, D], got shape {tuple(features.shape)}")
    n, v, _ = features.shape
    z = features.transpose(0, 1).reshape(n * v, -1)
    lab = labels.repeat(v)
    self_mask = torch.eye(n * v, dtype=torch.bool, device=z.device)
    logits = (z @ z.T / temperature).masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positive = (lab[:, None] == lab[None, :]) & ~self_mask
    mean_pos = log_prob.masked_fill(~positive, 0.0).sum(1) / positive.sum(1).clamp_min(1)
    return -(temperature / base_temperature) * mean_pos.mean()
