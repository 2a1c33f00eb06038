"""Benchmark: DM vs the random-subset baseline on MNIST and Fashion-MNIST at 1 and 10 images per
class, at a CPU budget, evaluated with the standard `dc` protocol (5 fresh ConvNets, 300 epochs,
final test accuracy).

    python benchmarks/dm_cpu.py            # writes benchmarks/results/dm_cpu.jsonl; resumable
"""

from __future__ import annotations

import argparse
from pathlib import Path

from runner import ROOT, Job, run_suite

# iterations per images-per-class: the CPU budget (the paper runs 20,000 on a GPU)
BUDGET = {1: 500, 10: 300}


def jobs(datasets: list[str], ipcs: list[int]) -> list[Job]:
    out = []
    for ipc in ipcs:
        for ds in datasets:
            out.append(Job("random", ds, ipc, "baseline", ["--preset", "random"]))
            out.append(Job("dm", ds, ipc, f"cpu-{BUDGET[ipc]}it",
                           ["--preset", "dm-cpu", "--iterations", str(BUDGET[ipc]), "eval.n_models=5"]))
    # the whole training set under the same protocol, at a CPU-sized 2 epochs and 1 model
    out += [Job("full", ds, 0, "2-epochs", ["epochs=2", "n_models=1"]) for ds in datasets]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="mnist,fashion_mnist")
    p.add_argument("--ipcs", default="1,10")
    p.add_argument("--results", default=str(ROOT / "benchmarks/results/dm_cpu.jsonl"))
    p.add_argument("--runs", default=str(ROOT / "benchmarks/runs"))
    a = p.parse_args()
    run_suite(jobs(a.datasets.split(","), [int(i) for i in a.ipcs.split(",")]), Path(a.results), Path(a.runs))


if __name__ == "__main__":
    main()
