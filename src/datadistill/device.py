"""The device a command runs on: picking it from a name, describing it, its peak memory."""

from __future__ import annotations

import resource
from pathlib import Path

import torch

from .config import ConfigError


def pick_device(name: str) -> torch.device:
    """``auto`` (a CUDA GPU if there is one, else the CPU), or a torch device name; `ConfigError`
    for an unknown name or a GPU that is not there."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"unknown device {name!r}: {e}") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda requested but no CUDA GPU is available; use device=cpu")
    return dev


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory on CUDA, else the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def device_name(device: torch.device, threads: int | None = None) -> str:
    """A human description of the device, e.g. ``cpu: AMD EPYC (2 threads)`` or the GPU's name; a CPU's
    threads are ``threads`` when given (another process's, e.g. a job started with that many), else
    this process's torch threads."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu: {model} ({threads or torch.get_num_threads()} threads)"
