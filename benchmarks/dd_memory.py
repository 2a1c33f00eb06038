"""Benchmark: memory and time of Dataset Distillation's unrolled steps, with and without gradient
checkpointing, as the number of steps grows (LeNet on MNIST, ``--per-step`` images per class per
step, 3 epochs, random initialization, the real batch of 1024 images).

Each measurement runs in its own process: it loads the data, builds the set and the method, runs
one warm-up iteration, then times ``--iters`` iterations. On the CPU, peak memory is the process's
peak resident set size over the timed iterations (``VmHWM``, reset through ``/proc/self/clear_refs``
after the warm-up) minus its RSS just before them, i.e. what one iteration adds on top of the loaded
dataset; large allocations are served by ``mmap`` (``MALLOC_MMAP_THRESHOLD_``) so that freed memory
leaves the RSS and the warm-up does not hide the peak. That setting slows the CPU allocator, so
time is measured in a second process without it. On CUDA memory is ``max_memory_allocated``.

    python benchmarks/dd_memory.py                  # appends to benchmarks/results/dd_memory.jsonl
    python benchmarks/dd_memory.py --steps 10,30 --iters 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def measure(dataset: str, steps: int, per_step: int, checkpoint: bool, iters: int, device: str) -> dict:
    import torch

    from datadistill.data import load_dataset
    from datadistill.device import device_name, pick_device
    from datadistill.methods import Context
    from datadistill.methods.dd import DD, DDConfig, make_set
    from datadistill.seeding import make_generator

    dev = pick_device(device)
    data = load_dataset(dataset)
    cfg = DDConfig(net_init="random", steps=steps, grad_checkpoint=checkpoint)
    ipc = steps * per_step
    synset = make_set(cfg, data, ipc, "noise", make_generator(0, "init")).to(dev)
    dd = DD(cfg, Context(data, synset, dev, make_generator(0, "m"), 0, ipc, iterations=iters + 1))
    dd.step(0)  # warm-up (allocator, kernels)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev) / 2**20
    else:
        reset_peak_rss()
        base = rss_mb()
    t = time.perf_counter()
    for it in range(1, iters + 1):
        dd.step(it)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        peak = torch.cuda.max_memory_allocated(dev) / 2**20
    else:
        peak = peak_rss_mb()
    return {"dataset": dataset, "model": cfg.model, "steps": steps, "per_step": per_step, "epochs": cfg.epochs,
            "unrolled_steps": steps * cfg.epochs, "checkpoint": checkpoint,
            "seconds_per_iteration": round((time.perf_counter() - t) / iters, 3),
            "peak_extra_mb": round(peak - base, 1), "device": device_name(dev)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--steps", default="1,5,10,20", help="comma-separated step counts")
    p.add_argument("--per-step", type=int, default=10, help="images per class in each step")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--results", default=str(ROOT / "benchmarks/results/dd_memory.jsonl"))
    p.add_argument("--one", nargs=2, metavar=("STEPS", "CHECKPOINT"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:  # child process: one measurement, printed as JSON
        print(json.dumps(measure(a.dataset, int(a.one[0]), a.per_step, a.one[1] == "1", a.iters, a.device)))
        return
    from run import commit

    results = Path(a.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if results.is_file():
        done = {(r["dataset"], r["steps"], r["per_step"], r["checkpoint"], r["device"].split(":")[0])
                for r in map(json.loads, results.read_text().splitlines()) if r}
    for steps in (int(s) for s in a.steps.split(",")):
        for ckpt in (False, True):
            if (a.dataset, steps, a.per_step, ckpt, a.device.split(":")[0]) in done:
                print(f"skip steps={steps} checkpoint={ckpt}: recorded", flush=True)
                continue
            cmd = [sys.executable, str(Path(__file__).resolve()), "--dataset", a.dataset, "--iters", str(a.iters),
                   "--device", a.device, "--per-step", str(a.per_step), "--one", str(steps), "1" if ckpt else "0"]
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
            mem = json.loads(subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True,
                                            env=env).stdout.strip().splitlines()[-1])
            r = json.loads(subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True,
                                          text=True).stdout.strip().splitlines()[-1])
            r["peak_extra_mb"] = mem["peak_extra_mb"]
            r.update(commit=commit(), command=f"python benchmarks/dd_memory.py --steps {steps} --per-step {a.per_step} "
                                                    f"--iters {a.iters}")
            with open(results, "a") as f:
                f.write(json.dumps(r) + "\n")
            print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
