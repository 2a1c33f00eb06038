"""Parity of a paper-exact evaluation preset with the authors' own evaluator, on a set they scored.

The anchor file (``--anchor``, an ``.npz`` with ``images`` [n, C, H, W] normalized as the dataset's
loader normalizes them, class-sorted ``labels`` and ``accs``: the reference evaluator's accuracies
of that set, fractions) is evaluated with ``--preset`` for ``--models`` ConvNets. Each model is its
own unit of work (seed ``i``): its accuracy is appended to ``benchmarks/results/parity-models.jsonl``
as soon as it finishes, and a rerun skips the models already there, so an interrupted run resumes.
When all are done, one record (preset, n_models, mean, std, a 95% interval of the mean, the
reference's mean and std, machine, CPU capability, commit) is appended to
``benchmarks/results/parity.jsonl``.

    python benchmarks/parity.py --anchor ../shared/anchors/ref_dm_mnist_ipc10_200it.npz \\
        --dataset mnist --preset dsa-paper --epochs 300 --models 5
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import commit  # noqa: E402
from speed_common import capability  # noqa: E402

from datadistill.data import load_dataset  # noqa: E402
from datadistill.device import device_name  # noqa: E402
from datadistill.evaluation import evaluate, get_protocol  # noqa: E402
from datadistill.synset import PixelSet  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
T95 = {2: 12.71, 3: 4.30, 4: 3.18, 5: 2.78, 6: 2.57, 7: 2.45, 8: 2.36, 9: 2.31, 10: 2.26}  # Student t, 2-sided


def key(args: argparse.Namespace) -> dict:
    return {"anchor": Path(args.anchor).name, "dataset": args.dataset, "preset": args.preset, "epochs": args.epochs}


def done_models(k: dict, out: Path) -> dict[int, dict]:
    path = out / "parity-models.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    return {r["model_index"]: r for r in rows if all(r.get(f) == v for f, v in k.items())}


def append(out: Path, name: str, rec: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / name, "a") as f:
        f.write(json.dumps(rec) + "\n")
    print(json.dumps(rec), flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--anchor", required=True, help=".npz with images, labels and the reference's accs")
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--root", default=None, help="data root (default: the library's)")
    ap.add_argument("--preset", default="dsa-paper")
    ap.add_argument("--epochs", type=int, default=None, help="the preset's epochs (default: the preset's own)")
    ap.add_argument("--models", type=int, default=5)
    ap.add_argument("--results", default=str(RESULTS), help="folder of the records (default: benchmarks/results)")
    args = ap.parse_args(argv)
    out = Path(args.results)
    z = np.load(args.anchor)
    data = load_dataset(args.dataset, args.root)
    images, labels = torch.from_numpy(z["images"]).float(), torch.from_numpy(z["labels"]).long()
    synset = PixelSet(images, labels, data.spec.num_classes)
    overrides = {"n_models": 1} | ({"epochs": args.epochs} if args.epochs else {})
    base = get_protocol(args.preset, **overrides)
    args.epochs = base.epochs
    k = key(args)
    code = commit()  # the code this process runs, whatever the checkout becomes meanwhile
    have = done_models(k, out)
    for i in range(args.models):
        if i in have:
            continue
        t = time.perf_counter()
        rep = evaluate(synset, data, base.with_(seed=i), progress=True)
        append(out, "parity-models.jsonl", {**k, "model_index": i, "seed": rep.seeds[0], "acc": round(100 * rep.accuracies[0], 2),
                                       "seconds": round(time.perf_counter() - t, 1), "capability": capability(),
                                       "device": device_name(torch.device("cpu")), "commit": code})
    accs = [r["acc"] for i, r in sorted(done_models(k, out).items()) if i < args.models]
    n = len(accs)
    mean = sum(accs) / n
    std = math.sqrt(sum((a - mean) ** 2 for a in accs) / n)  # population std, as the papers report
    sample_std = math.sqrt(sum((a - mean) ** 2 for a in accs) / (n - 1)) if n > 1 else float("nan")
    half = T95.get(n, 1.96) * sample_std / math.sqrt(n) if n > 1 else float("nan")
    ref = [round(100 * float(a), 2) for a in z["accs"]]
    ref_mean = sum(ref) / len(ref)
    ref_std = math.sqrt(sum((a - ref_mean) ** 2 for a in ref) / len(ref))
    append(out, "parity.jsonl", {
        **k, "n_models": n, "accuracies": [round(a, 2) for a in accs], "acc_mean": round(mean, 2),
        "acc_std": round(std, 2), "ci95": [round(mean - half, 2), round(mean + half, 2)],
        "reference_accs": ref, "reference_mean": round(ref_mean, 2), "reference_std": round(ref_std, 2),
        "protocol": base.with_(n_models=n).to_dict(), "capability": capability(),
        "device": device_name(torch.device("cpu")), "commit": code, "command": "python " + " ".join(sys.argv),
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
