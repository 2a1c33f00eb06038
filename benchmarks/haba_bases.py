"""Ablation: what a HaBa set's bases are worth without their hallucinators.

    python benchmarks/haba_bases.py benchmarks/results/mtt_cpu/haba-mnist-ipc10-cpu-100it-10steps-lr_hallucinator1.safetensors
    python benchmarks/haba_bases.py FILE --lr 0.024   # the full set at a fixed evaluation step size

For each HaBa file (a `FactorizedSet`), the default variant ``bases`` writes its bases as a plain
image set (same labels, same learned step size) to benchmarks/runs/haba-bases/<name>.safetensors and
evaluates it with `datadistill evaluate` under the same `dc` protocol as mtt_cpu.py (5 fresh
ConvNets, 300 epochs, no augmentation, the learned step size). ``--lr X`` instead evaluates the
full factorized set at the fixed step size X (to tell the images from the step size). One record per
(file, variant) is appended to benchmarks/results/haba_bases.jsonl; a pair already recorded is
skipped. Compare with the file's own row in mtt_cpu.jsonl: bases alone near the full set means the
hallucinators add little; bases near a random real subset means the bases learned little.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from runner import ROOT, commit, evaluate_json, repo_name

PROTOCOL = ["--protocol", "dc", "n_models=5"]


def bases_file(src: Path, out_dir: Path) -> Path:
    """Write the bases of the HaBa file ``src`` as a `PixelSet` file; returns its path."""
    from datadistill.synset import load_synset
    from datadistill.synset.io import save_synset
    from datadistill.synset.pixel import PixelSet

    f = load_synset(src)
    s = f.synset
    if not hasattr(s, "bases"):
        sys.exit(f"{src} is not a factorized (HaBa) set: it has no bases")
    name = src.parent.name if src.stem == "distilled" else src.stem  # a run folder's file: the folder's name
    dst = out_dir / f"{name}.safetensors"
    out_dir.mkdir(parents=True, exist_ok=True)
    save_synset(dst, PixelSet(s.bases.detach(), s.labels, s.num_classes, lr=s.learned_lr()), f.spec,
                zca=f.zca, method="haba-bases", source=str(src))
    return dst


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--lr", type=float, help="evaluate the full set at this fixed step size instead")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an evaluation-protocol override, e.g. epochs=1 for a smoke test (the variant name says it)")
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks/results/haba_bases.jsonl")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/runs/haba-bases")
    a = p.parse_args()
    from datadistill.synset import load_synset

    variant = (f"lr{a.lr:g}" if a.lr else "bases") + "".join(f"-{o}" for o in a.set)
    done = {(r["source"], r["variant"]) for r in map(json.loads, a.results.read_text().splitlines())} \
        if a.results.is_file() else set()
    flags = ([f"--lr={a.lr:g}"] if a.lr else []) + [f"--set={o}" for o in a.set]
    for src in a.files:
        src = src.resolve()
        name = repo_name(src)
        if (name, variant) in done:
            print(f"skip {name} ({variant}): already in {a.results.name}")
            continue
        if a.lr:
            target, extra = src, ["use_learned_lr=false", f"lr={a.lr:g}"]
        else:
            target, extra = bases_file(src, a.out), ["use_learned_lr=true"]
        n_images = len(load_synset(target).synset)  # its examples: hallucinations x bases, or the bases
        reports, wall = evaluate_json(["datadistill", "evaluate", str(target), *PROTOCOL, *extra, *a.set, "--json"])
        rep = reports["convnet"]
        rec = {"source": name, "variant": variant, "acc_mean": rep["acc_mean"], "acc_std": rep["acc_std"],
               "accuracies": rep["accuracies"], "lr": rep["lr"], "n_images": n_images,
               "eval_seconds": round(wall, 1), "commit": commit(),
               "command": shlex.join(["python", "benchmarks/haba_bases.py", name, *flags])}
        with open(a.results, "a") as f:
            f.write(json.dumps(rec) + "\n")
        print(f"{name} ({variant}): {rep['acc_mean']:.2f} ± {rep['acc_std']:.2f}", flush=True)


if __name__ == "__main__":
    main()
