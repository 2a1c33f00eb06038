"""Fused CPU kernels: instance norm (``GroupNorm(C, C)``, affine) + ReLU + 2x2 average pooling, the
block every DC-zoo ConvNet repeats, forward and backward in one C++ extension (`in_relu_pool.cpp`,
NCHW and channels_last, float and double, OpenMP over planes or images).

The extension is compiled with torch's extension tools and g++ on first use and cached under
``~/.cache/datadistill/kernels`` (keyed by the source, torch's version and the CPU path; one build
serves every checkout). Where it cannot be built (no compiler), `in_relu_pool` runs the eager
composition and says so once.

`in_relu_pool(x, weight, bias, eps)` is differentiable; a backward asked to build a graph (double
backward: DC's gradient matching, MTT's unrolled steps) recomputes through the eager ops, so every
order of gradient is exact. Whether the models use it is `use_fused()`, by ``DATADISTILL_KERNELS``:
``auto`` (the default) uses it where the extension builds and agrees with the eager ops on this machine
at first use (`check`), else the eager ops, with one line saying why; ``fused`` always; ``eager`` never.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

SOURCE = Path(__file__).with_name("in_relu_pool.cpp")
MODES = ("auto", "eager", "fused")
# the compiler's vector instructions for each path ATen dispatches to: the forced AVX2 path of an
# AVX-512 machine builds (and is cached) apart from its native path
VECTOR_FLAGS = {"AVX2": ["-mavx2", "-mfma"],
                "AVX512": ["-mavx2", "-mfma", "-mavx512f", "-mavx512vl", "-mavx512bw", "-mavx512dq",
                           "-mprefer-vector-width=512"]}


def eager(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """The reference composition: ``avg_pool2d(relu(group_norm(x, C, weight, bias, eps)), 2)``."""
    return F.avg_pool2d(F.relu(F.group_norm(x, x.shape[1], weight, bias, eps)), 2)


def _cache_dir() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "datadistill" / "kernels"


def build_dir() -> Path:
    """The cached build folder of this source, torch version and CPU path (built or not)."""
    capability = torch.backends.cpu.get_cpu_capability()
    key = hashlib.sha256(SOURCE.read_bytes() + torch.__version__.encode() + capability.encode()
                         + " ".join(VECTOR_FLAGS.get(capability, [])).encode()).hexdigest()[:12]
    return _cache_dir() / f"in_relu_pool-{key}"


@functools.cache
def extension() -> Any:
    """The compiled extension, built on first use (a minute) and cached; None where it cannot be built
    (one line on stderr says why, and the eager ops run instead)."""
    capability = torch.backends.cpu.get_cpu_capability()
    code, build = SOURCE.read_bytes(), build_dir()
    key = build.name.rsplit("-", 1)[1]
    flags = ["-O3", "-fopenmp", *VECTOR_FLAGS.get(capability, [])]
    try:
        import logging

        # before the import, which logs "No CUDA runtime is found" on a CPU-only machine
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        from torch.utils import cpp_extension

        build.mkdir(parents=True, exist_ok=True)
        # compiled from a copy inside the build folder: torch's loader rebuilds when a source's path
        # changes, so every checkout (a fresh clone, a worktree) shares the one build of this source
        source = build / SOURCE.name
        if not source.exists() or source.read_bytes() != code:
            tmp = build / f".{SOURCE.name}.{os.getpid()}.tmp"
            tmp.write_bytes(code)
            os.replace(tmp, source)
        if sys.stderr.isatty() and not any(build.glob("*.so")):  # a person waits: say why, once per build
            print("datadistill: building the fused CPU kernels (once per machine, about a minute)", file=sys.stderr)
        with warnings.catch_warnings():  # torch's builder leaves files to the collector: not the user's concern
            warnings.simplefilter("ignore", ResourceWarning)
            return cpp_extension.load(name=f"datadistill_in_relu_pool_{key}", sources=[str(source)],
                                      build_directory=str(build), extra_cflags=flags, extra_ldflags=["-fopenmp"],
                                      verbose=False)
    except Exception as e:  # noqa: BLE001  (no compiler, no headers, a read-only cache: the eager ops serve)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"datadistill: the fused CPU kernels could not be built ({first[:200]}); using the eager ops",
              file=sys.stderr)
        return None


class _InReluPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
        y, mean, rstd = extension().forward(x, weight, bias, eps)
        ctx.save_for_backward(x, weight, bias, mean, rstd)
        ctx.eps = eps
        return y

    @staticmethod
    def backward(ctx: Any, gy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, bias, mean, rstd = ctx.saved_tensors
        if torch.is_grad_enabled():  # a graph of the gradient is wanted: differentiate the eager ops
            wants = [t for t, need in zip((x, weight, bias), ctx.needs_input_grad[:3]) if need]
            with torch.enable_grad():
                grads = iter(torch.autograd.grad(eager(x, weight, bias, ctx.eps), wants, gy, create_graph=True))
            return (*(next(grads) if need else None for need in ctx.needs_input_grad[:3]), None)
        gx, gw, gb = extension().backward(gy, x, weight, bias, mean, rstd)
        need = ctx.needs_input_grad
        return (gx if need[0] else None, gw if need[1] else None, gb if need[2] else None, None)


def in_relu_pool(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``avg_pool2d(relu(group_norm(x, C, weight, bias, eps)), 2)``, fused on the CPU where the
    extension is built (float or double, NCHW or channels_last), else the eager ops."""
    # torch.func transforms (vmap of the batched evaluation, grad) see through the eager ops only
    fusable = (not any(torch._C._functorch.is_functorch_wrapped_tensor(t) for t in (x, weight, bias))
               and x.device.type == "cpu" and x.dim() == 4 and x.dtype in (torch.float32, torch.float64)
               and min(x.shape[2:]) >= 2 and (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)))
    if not fusable or extension() is None:
        return eager(x, weight, bias, eps)
    return _InReluPool.apply(x, weight, bias, eps)


class FusedInstanceNorm(torch.nn.GroupNorm):
    """``GroupNorm(C, C)`` (affine) whose forward also applies the ReLU and the 2x2 average pooling that
    follow it in a ConvNet block (`in_relu_pool`); the block's ReLU and pooling become ``Identity``,
    so the parameters keep their names and a state dict loads either way."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__(channels, channels, eps=eps, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return in_relu_pool(x, self.weight, self.bias, self.eps)


@functools.cache
def check() -> str | None:
    """Why the fused kernel must not be used on this machine (None: it may): not built, or its float
    forward and backward differ from the eager ops' beyond 1e-4 (relative) on a small batch in either
    layout. Run once per process, at the first model built."""
    if extension() is None:
        return "could not be built"
    g = torch.Generator().manual_seed(0)
    for layout in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(4, 8, 10, 10, generator=g).contiguous(memory_format=layout)
        w, b, gy = torch.rand(8, generator=g) + 0.5, torch.randn(8, generator=g), torch.randn(4, 8, 5, 5, generator=g)
        results = []
        for f in (in_relu_pool, eager):
            xs, ws, bs = (t.clone().requires_grad_() for t in (x, w, b))
            y = f(xs, ws, bs)
            y.backward(gy)
            results.append((y.detach(), xs.grad, ws.grad, bs.grad))
        for got, want in zip(*results):
            err = float((got - want).abs().max() / want.abs().max().clamp_min(1e-12))
            if not err <= 1e-4:
                return f"differ from the eager ops by {err:.2g} (relative) on this machine"
    return None


def use_fused() -> bool:
    """Whether models build their instance-norm/ReLU/average-pool blocks fused, by
    ``DATADISTILL_KERNELS`` (``auto`` by default: where `check` passes; an unknown value is an error
    naming the valid ones)."""
    mode = os.environ.get("DATADISTILL_KERNELS", "auto")
    if mode not in MODES:
        from ..config import ConfigError  # noqa: PLC0415

        raise ConfigError(f"DATADISTILL_KERNELS={mode!r}; valid: {', '.join(MODES)}")
    if mode != "auto":
        return mode == "fused"
    why = check()
    if why is not None and why != "could not be built":  # `extension` has said why already
        _say_once(f"datadistill: the fused CPU kernels {why}; using the eager ops")
    return why is None


@functools.cache
def _say_once(line: str) -> None:
    print(line, file=sys.stderr)


__all__ = ["FusedInstanceNorm", "MODES", "check", "eager", "extension", "in_relu_pool", "use_fused"]
