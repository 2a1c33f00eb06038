"""The linear case of Dataset Distillation (Wang, Zhu, Torralba, Efros 2018, arXiv 1811.10959, Sec. 3.3).

Model and loss. Linear least squares on a data matrix ``X`` (N x D) with targets ``y`` (N):

    l(X, y; theta) = 1/(2N) ||X theta - y||^2,     theta* = (X^T X)^{-1} X^T y     (the optimum)

One gradient step (step size ``eta``) on a distilled set ``d`` (M x D), ``t`` (M) from ``theta0``:

    theta1 = theta0 - (eta/M) d^T (d theta0 - t)
           = (I - (eta/M) d^T d) theta0 + (eta/M) d^T t                    -> `linear_gd_step`

For ``theta1 = theta*`` from EVERY ``theta0`` the coefficient of ``theta0`` must vanish and the
constant must be the optimum (the paper's two conditions):

    d^T d = (M/eta) I         and         (eta/M) d^T t = theta*

The first needs ``rank(d^T d) = D`` and ``rank(d^T d) <= M``, hence ``M >= D``. When it holds,
``t = d theta*`` satisfies the second: ``(eta/M) d^T d theta* = theta*``. `distill_linear` builds
``d = sqrt(M/eta) Q`` with ``Q`` (M x D) having orthonormal columns (QR of a Gaussian drawn from
the generator) and ``t = d theta*``; for ``M < D`` it raises, with the argument above.

Why ``M < D`` cannot work, pointwise. ``d^T (.)`` lies in the row space of ``d``, so the step
leaves the component of ``theta0`` in ``null(d)`` (dimension >= D - M) untouched:
``P_null theta1 = P_null theta0``. Hence for any ``d, t``

    ||theta1 - theta*|| >= ||P_null(d) (theta0 - theta*)||                 -> `untouched_residual`

which is nonzero for almost every ``theta0``; for ``theta0 ~ N(mu, s^2 I)`` its mean square is
``>= (D - M) s^2``. `best_linear_distilled` learns ``d, t`` with Adam to minimise the mean of
``||theta1(theta0) - theta*||^2`` over sampled initializations (the paper's objective, Eq. 2 with
a distribution of ``theta0``), for any ``M``: it reaches the optimum for ``M >= D`` and stalls
at the bound above for ``M < D``.

Shapes: ``theta`` is ``[D]`` or a batch ``[K, D]``; ``y`` and ``t`` are vectors. Everything is
dtype-agnostic; use float64 to see exact equalities (errors ~1e-12).
"""

from __future__ import annotations

import math

import torch


def least_squares_solution(X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``theta* = argmin ||X theta - y||^2`` (``[D]``); ``X`` must have full column rank."""
    if X.ndim != 2 or y.ndim != 1 or X.shape[0] != y.shape[0]:
        raise ValueError(f"expected X [N, D] and y [N], got {tuple(X.shape)} and {tuple(y.shape)}")
    rank = int(torch.linalg.matrix_rank(X))
    if rank < X.shape[1]:
        raise ValueError(f"X has rank {rank} < D = {X.shape[1]} features: the least-squares optimum "
                         "(X^T X)^{-1} X^T y is not unique; drop redundant features or add samples")
    return torch.linalg.lstsq(X, y.unsqueeze(-1)).solution.squeeze(-1)


def linear_gd_step(theta0: torch.Tensor, d: torch.Tensor, t: torch.Tensor,
                   lr: float | torch.Tensor) -> torch.Tensor:
    """One GD step on ``1/(2M) ||d theta - t||^2``: ``theta0 - (lr/M) d^T (d theta0 - t)``.

    ``theta0`` is ``[D]`` or ``[K, D]`` (K initializations stepped at once); differentiable in all
    arguments.
    """
    if d.ndim != 2 or t.shape != (d.shape[0],) or theta0.shape[-1] != d.shape[1]:
        raise ValueError(f"expected theta0 [..., D], d [M, D], t [M]; got {tuple(theta0.shape)}, "
                         f"{tuple(d.shape)}, {tuple(t.shape)}")
    residual = theta0 @ d.T - t  # [..., M]
    return theta0 - (lr / d.shape[0]) * (residual @ d)


def distill_linear(X: torch.Tensor, y: torch.Tensor, M: int, lr: float = 1.0,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """An exact distilled set ``(d [M, D], t [M])``: one step of size ``lr`` from any ``theta0``
    lands on ``theta*``. Needs ``M >= D`` (see the module docstring)."""
    D = X.shape[1]
    if M < D:
        raise ValueError(
            f"no distilled set of M={M} points reaches the least-squares optimum from every "
            f"initialization in one step when M < D={D} features (Wang et al. 2018, Sec. 3.3): it needs "
            f"d^T d = (M/lr) I, of rank D, but rank(d^T d) <= M; the component of theta0 in the "
            f"null space of d is never updated. Use M >= {D}, or best_linear_distilled for the "
            f"best approximate set")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    theta_star = least_squares_solution(X, y)
    gaussian = torch.randn(M, D, generator=generator, dtype=X.dtype, device=X.device)
    Q, _ = torch.linalg.qr(gaussian)  # [M, D], Q^T Q = I
    d = math.sqrt(M / lr) * Q  # d^T d = (M/lr) I
    return d, d @ theta_star  # (lr/M) d^T d theta* = theta*


def untouched_residual(theta0: torch.Tensor, d: torch.Tensor, theta_star: torch.Tensor) -> torch.Tensor:
    """``||P_null(d) (theta0 - theta*)||`` (per row of ``theta0``): a lower bound on
    ``||theta1 - theta*||`` for every ``t`` and step size, zero only if ``d`` has rank D."""
    # orthonormal basis of null(d): the right singular vectors past d's numerical rank
    _, S, Vh = torch.linalg.svd(d, full_matrices=True)
    tol = (S.max() if S.numel() else 0.0) * max(d.shape) * torch.finfo(d.dtype).eps
    null = Vh[int((S > tol).sum()):]  # [D - rank, D]
    return ((theta0 - theta_star) @ null.T).norm(dim=-1)


def best_linear_distilled(X: torch.Tensor, y: torch.Tensor, M: int, lr: float,
                          theta0s: torch.Tensor, steps: int = 2000, opt_lr: float = 0.05,
                          generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Learn ``(d [M, D], t [M])`` minimising ``mean_k ||theta1(theta0s[k]) - theta*||^2``.

    Adam with a cosine-annealed step size (``opt_lr`` -> 0 over ``steps``), so that the solution
    settles instead of hovering at Adam's noise floor. ``d`` starts Gaussian with variance
    ``1/lr`` (so ``E[d^T d] = (M/lr) I``, the exact solution's scale), ``t`` at zero. Works for any
    ``M``; for ``M < D`` the result is the best set, not an exact one. The loop is ``steps`` tiny
    ops: run it with ``torch.set_num_threads(1)`` (faster, and on a loaded machine several threads
    make each backward wait for a descheduled thread, many times slower).
    """
    if theta0s.ndim != 2 or theta0s.shape[1] != X.shape[1]:
        raise ValueError(f"theta0s must be [K, D={X.shape[1]}], got {tuple(theta0s.shape)}")
    if M < 1 or steps < 1 or not lr > 0:
        raise ValueError(f"need M >= 1, steps >= 1 and lr > 0; got M={M}, steps={steps}, lr={lr}")
    theta_star = least_squares_solution(X, y).detach()
    D = X.shape[1]
    d = (torch.randn(M, D, generator=generator, dtype=X.dtype, device=X.device) / math.sqrt(lr))
    d.requires_grad_()
    t = torch.zeros(M, dtype=X.dtype, device=X.device, requires_grad=True)
    opt = torch.optim.Adam([d, t], lr=opt_lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    for _ in range(steps):
        loss = (linear_gd_step(theta0s, d, t, lr) - theta_star).pow(2).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return d.detach(), t.detach()
