"""Trajectory matching (MTT, Cazenavette et al. 2022): the normalized parameter distance.

    L = ||theta_student - theta*_{t+M}||^2 / ||theta*_t - theta*_{t+M}||^2

summed over all parameter tensors (the same as on one flattened vector; the reference's division
of both terms by the number of parameters cancels).
"""

from __future__ import annotations

import torch

Params = dict[str, torch.Tensor]


def squared_distance(a: Params, b: Params) -> torch.Tensor:
    """``sum_k ||a[k] - b[k]||^2`` over the (shared) keys of ``a``."""
    missing = sorted(set(a) - set(b))
    if missing:
        raise KeyError(f"parameters {missing} are missing from the other set")
    return sum(((a[k] - b[k]) ** 2).sum() for k in a)  # type: ignore[return-value]


def trajectory_loss(student: Params, start: Params, target: Params) -> torch.Tensor:
    """How far the student ended from the target, relative to how far the expert moved."""
    return squared_distance(student, target) / squared_distance(start, target).clamp_min(1e-12)
