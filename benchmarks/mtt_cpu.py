"""Benchmark: trajectory matching (MTT) and HaBa on MNIST and Fashion-MNIST at a CPU budget, beside
the DM and random rows of dm_cpu.jsonl (same `dc` protocol: 5 fresh ConvNets, 300 epochs, no
augmentation, final test accuracy; MTT and HaBa train them at the set's learned step size, which is
part of what they distill).

    python benchmarks/mtt_cpu.py                 # experts, then every job; appends to mtt_cpu.jsonl; resumable
    python benchmarks/mtt_cpu.py --datasets mnist --ipcs 1 --methods mtt
    python benchmarks/mtt_cpu.py --experts-only  # e.g. in a second process while the first distills

Step 1 trains `--n-experts` experts (default 1; the papers use 100) per dataset for
`--expert-epochs` epochs (`datadistill experts`, MTT's buffer settings: SGD lr 0.01, no momentum,
DSA) into benchmarks/runs/experts/<dataset>/ and
records the time and the experts' test accuracy (a record with ``what: experts``). Step 2 runs each
job against those experts; HaBa at a budget of ``ipc`` images per class gets ``max(1, ipc - 1)``
bases per class and 5 hallucinators, and its record adds ``bases_per_class``, ``n_hallucinators``
and ``stored_floats`` (MTT's records carry ``stored_floats`` too).

The budget (CPU, 2 cores) is far below the papers' (5,000 / 15,000 iterations, 100 experts of 50
epochs): see BUDGET and the README for what was run.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from runner import ROOT, Job, commit, run_suite

# iterations per images-per-class; the matched window: starts 0..MAX_START-1, EXPERT_EPOCHS epochs
BUDGET = {1: 300, 10: 100}
MAX_START, EXPERT_EPOCHS = 2, 2
SYN_STEPS = {1: 20, 10: 10}
COMMON = ["eval.preset=dc", "eval.n_models=5", "eval.use_learned_lr=true"]


def experts_dir(dataset: str) -> Path:
    return ROOT / "benchmarks" / "runs" / "experts" / dataset


def train_experts(dataset: str, n: int, epochs: int, results: Path) -> None:
    """Train (or finish) the ``n`` experts of ``dataset`` and record their cost once per number of
    experts (``--n-experts 3`` after a run with 1 trains the 2 missing ones, or only records them
    when other processes have trained them with ``datadistill experts --indices``)."""
    done = [json.loads(x) for x in results.read_text().splitlines() if x.strip()] if results.is_file() else []
    if any(r.get("what") == "experts" and r["dataset"] == dataset and r["n_experts"] >= n for r in done):
        print(f"skip experts for {dataset}: {n} already recorded in {results.name}", flush=True)
        return
    cmd = ["datadistill", "experts", "--dataset", dataset, "--model", "ConvNet", "--experts", str(n),
           "--epochs", str(epochs), "--out", str(experts_dir(dataset).relative_to(ROOT)), "--no-progress"]
    print("$ " + shlex.join(cmd), flush=True)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "datadistill.cli", *cmd[1:]], cwd=ROOT, check=True)
    from datadistill.experts import ExpertBuffer

    s = ExpertBuffer.open(experts_dir(dataset)).summary()
    rec = {"what": "experts", "dataset": dataset, "model": "convnet", "n_experts": s["finished"],
           "epochs": s["epochs"], "train_seconds_total": s["total_seconds"],
           "seconds_per_expert_epoch": round(s["total_seconds"] / (s["finished"] * s["epochs"]), 1),
           "mean_final_test_acc": s["mean_final_test_acc"], "wall_seconds_this_call": round(time.perf_counter() - t, 1),
           "device": s["experts"][0].get("device"), "commit": commit(), "command": shlex.join(cmd)}
    with open(results, "a") as f:
        f.write(json.dumps(rec) + "\n")
    print(json.dumps(rec), flush=True)


def n_experts_in(folder: Path) -> int:
    """The finished experts in ``folder``, counted as a run counts them (`experts.buffer.scan`)."""
    from datadistill.experts.buffer import scan

    return len(scan(folder))


def override_tag(override: str) -> str:
    """``method_config.lr_hallucinator=1`` -> ``-lr_hallucinator1`` (part of a setting's name)."""
    key, value = override.split("=", 1)
    return f"-{key.rsplit('.', 1)[-1]}{value}"


def jobs(datasets: list[str], ipcs: list[int], methods: list[str], iterations: int | None = None,
         overrides: list[str] = (), experts: dict[str, Path] | None = None,
         syn_steps: int | None = None) -> list[Job]:
    """One job per (ipc, dataset, method). The setting names the budget (iterations and unrolled
    steps), the number of experts when more than one, and each ``--set`` override
    (``method_config.lr_hallucinator=1`` -> ``-lr_hallucinator1``)."""
    out = []
    for ipc in ipcs:
        its = iterations or BUDGET[ipc]
        steps = syn_steps or SYN_STEPS[ipc]
        for ds in datasets:
            folder = (experts or {}).get(ds, experts_dir(ds))
            n = n_experts_in(folder)
            tag = f"cpu-{its}it-{steps}steps" + (f"-{n}experts" if n > 1 else "")
            tag += "".join(override_tag(o) for o in overrides)
            for m in methods:
                args = ["--iterations", str(its), f"checkpoint_every={max(1, its // 20)}",
                        f"method_config.experts={folder.resolve().relative_to(ROOT)}",
                        f"method_config.max_start_epoch={MAX_START}", f"method_config.expert_epochs={EXPERT_EPOCHS}",
                        f"method_config.syn_steps={steps}", *COMMON, *overrides]
                out.append(Job(m, ds, ipc, tag, args))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="mnist,fashion_mnist")
    p.add_argument("--ipcs", default="1,10")
    p.add_argument("--methods", default="mtt,haba")
    p.add_argument("--n-experts", type=int, default=1,
                   help="experts per dataset (one 3-epoch ConvNet expert is ~20-25 min on one CPU thread)")
    p.add_argument("--expert-epochs", type=int, default=MAX_START - 1 + EXPERT_EPOCHS)
    p.add_argument("--experts-only", action="store_true")
    p.add_argument("--iterations", type=int, help="override BUDGET (the setting name says it)")
    p.add_argument("--syn-steps", type=int, help="override SYN_STEPS, the unrolled student steps per iteration "
                                                  "(the setting name says it)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a config override for every job, e.g. method_config.lr_hallucinator=1 (repeatable; "
                        "the setting name says it)")
    p.add_argument("--experts", action="append", default=[], metavar="DATASET=FOLDER",
                   help="match these experts instead of benchmarks/runs/experts/DATASET (a folder inside the "
                        "repository; the setting names how many experts it holds when more than one)")
    p.add_argument("--results", default=str(ROOT / "benchmarks/results/mtt_cpu.jsonl"))
    p.add_argument("--runs", default=str(ROOT / "benchmarks/runs"), help="run folders (inside the repository)")
    a = p.parse_args()
    results = Path(a.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    datasets = a.datasets.split(",")
    bad = [o for o in a.set + a.experts if "=" not in o]
    if bad:
        p.error(f"--set / --experts take KEY=VALUE, got {bad[0]!r}")
    experts = {k: (ROOT / v).resolve() for k, v in (o.split("=", 1) for o in a.experts)}
    for ds in datasets:
        if ds not in experts:
            train_experts(ds, a.n_experts, a.expert_epochs, results)
        elif not n_experts_in(experts[ds]):
            p.error(f"no experts in {experts[ds]}")
    if not a.experts_only:
        run_suite(jobs(datasets, [int(i) for i in a.ipcs.split(",")], a.methods.split(","), a.iterations, a.set,
                       experts, a.syn_steps), results, Path(a.runs).resolve())


if __name__ == "__main__":
    main()
