"""Kernel ridge regression on features, with the ridge scaled by the Gram matrix's trace (FRePo).

For support features ``F_s`` [n, d] with targets ``Y_s`` [n, k] and query features ``F_t`` [m, d],
the linear kernel gives ``K_ss = F_s F_s^T`` and ``K_ts = F_t F_s^T``, and the prediction is

    Y_t_hat = K_ts (K_ss + lambda * tr(K_ss) / n * I)^-1 Y_s

Scaling lambda by the mean diagonal entry ``tr(K_ss) / n`` makes the regularization independent
of the features' scale (a network's feature norms vary widely over training and between networks),
so one ``lambda`` (FRePo: 1e-6) serves every network of a pool. Everything is differentiable
with respect to the features and the support targets.
"""

from __future__ import annotations

import torch


def trace_ridge(gram: torch.Tensor, reg: float) -> torch.Tensor:
    """``gram + reg * tr(gram) / n * I`` for a square [n, n] Gram matrix."""
    n = gram.shape[0]
    eye = torch.eye(n, dtype=gram.dtype, device=gram.device)
    return gram + (abs(reg) * torch.trace(gram) / n) * eye


def krr_predict(k_ts: torch.Tensor, k_ss: torch.Tensor, y_s: torch.Tensor, reg: float = 1e-6) -> torch.Tensor:
    """KRR prediction ``k_ts (k_ss + reg tr(k_ss)/n I)^-1 y_s`` from precomputed kernels: [m, k]."""
    return k_ts @ torch.linalg.solve(trace_ridge(k_ss, reg), y_s)


def feature_krr(f_t: torch.Tensor, f_s: torch.Tensor, y_s: torch.Tensor, reg: float = 1e-6) -> torch.Tensor:
    """KRR with the linear kernel on features (FRePo's "neural feature regression"): the prediction
    for the query features ``f_t`` [m, d] from the support ``(f_s [n, d], y_s [n, k])``; [m, k]."""
    return krr_predict(f_t @ f_s.T, f_s @ f_s.T, y_s, reg)
