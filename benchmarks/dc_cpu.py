"""Benchmark: gradient matching (DC), DC with siamese augmentation (DSA) and the coreset baselines
(herding, k-center) on MNIST and Fashion-MNIST at 1 and 10 images per class, at a CPU budget,
evaluated with the same `dc` protocol as the DM and random rows (5 fresh ConvNets, 300 epochs,
no augmentation, final test accuracy).

    python benchmarks/dc_cpu.py            # appends to benchmarks/results/dc_cpu.jsonl; resumable
    python benchmarks/dc_cpu.py --methods herding,kcenter --ipcs 1

The budget: the papers run 1,000 iterations with 256 real images per class on a GPU; at 10 images
per class an iteration is 10 matching steps and 50 epochs of network training in between. Here
DC/DSA use 64 real images per class and the iteration counts below (see the README for the
seconds per iteration this gives on 2 cores). The DM and random rows are in dm_cpu.jsonl.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from runner import ROOT, Job, run_suite

BUDGET = {1: 200, 10: 10}  # DC/DSA iterations per images-per-class on the CPU (an ipc-10 iteration is ~3 min)
DC_ARGS = ["method_config.batch_real=64", "eval.preset=dc", "eval.n_models=5"]


def jobs(datasets: list[str], ipcs: list[int], methods: list[str]) -> list[Job]:
    out = []
    for ipc in ipcs:
        for ds in datasets:
            for m in methods:
                if m in ("herding", "kcenter"):
                    out.append(Job(m, ds, ipc, "trained-convnet-1ep", ["--preset", m]))
                else:
                    out.append(Job(m, ds, ipc, f"cpu-{BUDGET[ipc]}it",
                                   ["--iterations", str(BUDGET[ipc]),
                                    f"checkpoint_every={max(1, BUDGET[ipc] // 20)}", *DC_ARGS]))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="mnist,fashion_mnist")
    p.add_argument("--ipcs", default="1,10")
    p.add_argument("--methods", default="herding,kcenter,dc,dsa")
    p.add_argument("--results", default=str(ROOT / "benchmarks/results/dc_cpu.jsonl"))
    p.add_argument("--runs", default=str(ROOT / "benchmarks/runs"))
    a = p.parse_args()
    run_suite(jobs(a.datasets.split(","), [int(i) for i in a.ipcs.split(",")], a.methods.split(",")),
              Path(a.results), Path(a.runs))


if __name__ == "__main__":
    main()
