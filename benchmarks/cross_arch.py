"""Cross-architecture check: distilled sets evaluated on networks they were not distilled for.

    python benchmarks/cross_arch.py benchmarks/results/mtt_cpu/mtt-mnist-ipc10-cpu-100it-10steps.safetensors
    python benchmarks/cross_arch.py FILE... --models mlp,lenet,alexnet

Each FILE (any distilled set: pixels or HaBa's factorized sets) is evaluated with `datadistill
evaluate FILE --models M --protocol dc n_models=5` for every model M: 5 fresh networks, 300 epochs,
no augmentation, final test accuracy, and the protocol's fixed learning rate 0.01 for every set
(a learned step size is tuned for the ConvNet it was distilled with, and DM or coreset sets have
none, so a fixed rate is the even comparison). One record per (file, model) is appended to
benchmarks/results/cross_arch.jsonl; pairs already recorded are skipped (resumable).

Each record also carries ``input_rms``: the root mean square of the set's training examples (for
HaBa, every hallucination of every base) in the normalized space where real data has an RMS near 1.
Networks without normalization layers (MLP, LeNet, AlexNet here) see that scale directly; the
instance-normalized ConvNet is blind to it.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from runner import ROOT, commit, evaluate_json, repo_name

PROTOCOL = ["--protocol", "dc", "n_models=5", "use_learned_lr=false"]


def input_rms(path: Path) -> tuple[float, int]:
    """RMS of the set's materialized training examples, and how many there are."""
    from datadistill.synset import load_synset

    s = load_synset(path).synset
    x = s.materialize()[0]
    return round(float(x.detach().float().pow(2).mean().sqrt()), 3), int(x.shape[0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--models", default="mlp,lenet", help="comma-separated models (`datadistill list models`)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an evaluation-protocol override, e.g. epochs=1 for a smoke test (recorded)")
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks/results/cross_arch.jsonl")
    a = p.parse_args()
    models = [m for m in a.models.split(",") if m]
    done = {(r["source"], r["model"], tuple(r.get("overrides", []))) for r in
            map(json.loads, a.results.read_text().splitlines())} if a.results.is_file() else set()
    for src in a.files:
        if not src.is_file():
            sys.exit(f"no such file: {src}")
        name = repo_name(src)
        rms, n = input_rms(src)
        for m in models:
            if (name, m, tuple(a.set)) in done:
                print(f"skip {name} on {m}: already in {a.results.name}")
                continue
            reports, wall = evaluate_json(["datadistill", "evaluate", name, "--models", m, *PROTOCOL, *a.set, "--json"])
            rep = reports[m]
            rec = {"source": name, "model": m, "acc_mean": rep["acc_mean"], "acc_std": rep["acc_std"],
                   "accuracies": rep["accuracies"], "lr": rep["lr"], "n_models": rep["n_models"],
                   "input_rms": rms, "n_images": n, "overrides": list(a.set),
                   "eval_seconds": round(wall, 1), "commit": commit(),
                   "command": shlex.join(["python", "benchmarks/cross_arch.py", name, "--models", m,
                                          *[f"--set={o}" for o in a.set]])}
            with open(a.results, "a") as f:
                f.write(json.dumps(rec) + "\n")
            print(f"{name} on {m}: {rep['acc_mean']:.2f} ± {rep['acc_std']:.2f} (input rms {rms})", flush=True)


if __name__ == "__main__":
    main()
