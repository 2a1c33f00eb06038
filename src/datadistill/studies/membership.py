"""Membership-inference attacks on a target's outputs (`studies.privacy`): the loss threshold (Yeom et
al. 2018) and LiRA (Carlini et al. 2022, online, global variance), scored by ROC AUC and the
true-positive rate at low false-positive rates."""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from .base import StudyError

FPRS = (0.001, 0.01)


@torch.no_grad()
def confidences(net: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int = 500
                ) -> tuple[list[float], list[float]]:
    """Per image: LiRA's logit-scaled confidence ``z_y - logsumexp_{j != y} z_j`` and the loss."""
    net.eval()
    phis, losses = [], []
    for i in range(0, len(images), batch):
        z = net(images[i:i + batch]).float()
        y = labels[i:i + batch]
        zy = z.gather(1, y[:, None]).squeeze(1)
        others = z.scatter(1, y[:, None], float("-inf"))
        phis.append(zy - torch.logsumexp(others, dim=1))
        losses.append(torch.nn.functional.cross_entropy(z, y, reduction="none"))
    net.train()
    return torch.cat(phis).tolist(), torch.cat(losses).tolist()


def nearest(images: torch.Tensor, candidates: torch.Tensor) -> list[int]:
    """For each image, the index of the nearest candidate (Euclidean, in the data's normalisation)."""
    d = torch.cdist(images.flatten(1).float(), candidates.flatten(1).float())
    return d.argmin(1).tolist()


def lira_scores(phi: torch.Tensor, member: torch.Tensor, groups: Sequence[int] | None = None) -> torch.Tensor:
    """Online LiRA with global variances: for each target run ``t`` (a row), the shadows are the runs of
    the *other* groups (``groups[r]``: the split of run ``r``; None: every other run). ``phi`` and
    ``member`` are ``[runs, pool]``; returns ``[runs, pool]`` scores, higher meaning "member".

    The two halves of a split are complementary, so leaving out the target's own split leaves every
    pool image exactly as many shadows that saw it as shadows that did not. That balance matters
    with few shadows: an image with fewer shadows on one side would be scored by the width of that
    side's estimate, not by the target. The spreads are pooled over the pool (residuals from each
    image's means); with one shadow per side they cannot be, and one shared spread is used (the
    score is then the difference of squared distances to the two means)."""
    phi, member = phi.double(), member.bool()
    runs = phi.shape[0]
    groups = list(range(runs)) if groups is None else [int(g) for g in groups]
    scores = torch.empty_like(phi)
    for t in range(runs):
        others = [r for r in range(runs) if groups[r] != groups[t]]
        if len(others) < 2:
            raise StudyError("LiRA needs shadows on both sides: at least 2 splits (each target's shadows are the runs "
                           "of the other splits)")
        p, m = phi[others], member[others]
        n_in, n_out = m.sum(0), (~m).sum(0)
        mu_in = (p * m).sum(0) / n_in.clamp(min=1)
        mu_out = (p * ~m).sum(0) / n_out.clamp(min=1)
        res_in = (p - mu_in)[m & (n_in > 1)]
        res_out = (p - mu_out)[~m & (n_out > 1)]
        if res_in.numel() > 1 and res_out.numel() > 1:
            sd_in, sd_out = max(float(res_in.std()), 1e-6), max(float(res_out.std()), 1e-6)
        else:
            sd_in = sd_out = 1.0
        x = phi[t]
        online = (-0.5 * ((x - mu_in) / sd_in) ** 2 - math.log(sd_in)) - (-0.5 * ((x - mu_out) / sd_out) ** 2
                                                                          - math.log(sd_out))
        offline = (x - mu_out) / sd_out  # an image no shadow saw (or all did): the one-sided test
        scores[t] = torch.where((n_in > 0) & (n_out > 0), online, offline)
    return scores


def roc_metrics(scores: Sequence[float] | torch.Tensor, labels: Sequence[int] | torch.Tensor,
                fprs: Sequence[float] = FPRS) -> dict[str, float]:
    """ROC AUC and the true-positive rate at each false-positive rate of ``fprs`` (the highest TPR at
    a threshold whose FPR does not exceed it) of scores where higher means "member"."""
    from sklearn.metrics import roc_auc_score, roc_curve

    s = torch.as_tensor(scores, dtype=torch.float64).numpy()
    y = torch.as_tensor(labels).int().numpy()
    if y.min() == y.max():
        raise ValueError("roc_metrics needs members and non-members")
    fpr, tpr, _ = roc_curve(y, s)
    out = {"auc": float(roc_auc_score(y, s)), "members": int(y.sum()), "non_members": int((1 - y).sum())}
    for a in fprs:
        ok = fpr <= a
        out[f"tpr@{100 * a:g}%fpr"] = float(tpr[ok].max()) if ok.any() else 0.0
    return out


def attack(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Both attacks on one pipeline's runs, pooled over the targets; the same against the nearest
    members only (the non-members all kept)."""
    phi = torch.tensor([r["phi"] for r in rows])
    loss = torch.tensor([r["loss"] for r in rows])
    member = torch.tensor([r["member"] for r in rows]).bool()
    lira = lira_scores(phi, member, [run_group(r) for r in rows])
    out: dict[str, Any] = {"runs": len(rows), "test_accuracy": sum(r["test_accuracy"] for r in rows) / len(rows),
                           "train_images": rows[0]["train_images"]}
    for name, score in (("loss", -loss), ("lira", lira)):
        out[name] = _rounded(roc_metrics(score.flatten(), member.flatten()))
        out[name]["roc"] = roc_points(score.flatten(), member.flatten())
    if all(r["nearest"] for r in rows):
        near = torch.zeros_like(member)
        for i, r in enumerate(rows):
            near[i, r["nearest"]] = True
        keep = near | ~member
        for name, score in (("loss", -loss), ("lira", lira)):
            out[f"{name}_nearest"] = _rounded(roc_metrics(score[keep], member[keep]))
    return out


ROC_FPRS = [round(10 ** (-4 + 4 * i / 32), 6) for i in range(33)]  # 1e-4 .. 1, log-spaced


def roc_points(scores: torch.Tensor, labels: torch.Tensor) -> dict[str, list[float]]:
    """The ROC curve at log-spaced false-positive rates (what the plot draws, kept in the summary)."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(labels.int().numpy(), scores.double().numpy())
    return {"fpr": ROC_FPRS, "tpr": [round(float(tpr[fpr <= a].max()) if (fpr <= a).any() else 0.0, 5)
                                     for a in ROC_FPRS]}


def run_group(row: dict[str, Any]) -> int:
    """The split a run's half belongs to (its LiRA group)."""
    return int(row["split"].split(":")[1])


def _rounded(d: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in d.items()}
