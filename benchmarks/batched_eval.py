"""Batched against one-after-another evaluation: for each N, the seconds to evaluate N models of one
distilled set both ways (`evaluate(..., batch_models=N)` and the sequential loop), in the same run
and the same protocol, interleaved, with the speed-up (sequential / batched) and both ways'
accuracies (they agree up to float rounding).

    python benchmarks/batched_eval.py [--file benchmarks/released/dm-mnist-ipc10.safetensors]
        [--n 1,5,10] [--epochs 20] [--protocol NAME] [--device cpu] [--repeats 1] [--force]

The protocol is the file's own (as ``datadistill evaluate FILE`` picks it) unless ``--protocol``,
with ``epochs`` and ``n_models = N``. Each time is end to end (training and the test pass); with
``--repeats R`` the two ways alternate which goes first and each keeps its fastest. N = 1 batched is
the vmapped path with a single model (``batch_models=2`` for one model), which ``batch_models=1``
never takes: it shows what vmap itself costs.

Appends one JSON line per N to benchmarks/results/batched_eval.jsonl (or ``--results``), with the
command, the commit, the machine, its CPU capability and threads. An N already recorded with the same
settings (file, protocol, epochs, device, threads, capability) is skipped unless ``--force``, so an
interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from datadistill.data import load_dataset  # noqa: E402
from datadistill.data.zca import match_whitening, unwhitened_spec  # noqa: E402
from datadistill.device import device_name, pick_device  # noqa: E402
from datadistill.evaluation import EvalReport, evaluate, get_protocol  # noqa: E402
from datadistill.methods import file_evaluation  # noqa: E402
from datadistill.synset import load_synset  # noqa: E402
from run import commit, repo_name  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "batched_eval.jsonl"
SETTINGS = ("file", "protocol", "epochs", "device", "threads", "capability")


def recorded(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def timed(fn) -> tuple[float, EvalReport]:
    t = time.perf_counter()
    report = fn()
    return time.perf_counter() - t, report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--file", default="benchmarks/released/dm-mnist-ipc10.safetensors")
    ap.add_argument("--n", default="1,5,10", help="comma-separated numbers of models")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--protocol", help="evaluation preset (default: the file's own)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--root", help="data root")
    ap.add_argument("--repeats", type=int, default=1, help="time each way this many times, keep the fastest")
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--force", action="store_true", help="measure an N even when it is already recorded")
    args = ap.parse_args(argv)
    ns = [int(v) for v in args.n.split(",")]
    if min(ns) < 1 or args.epochs < 1 or args.repeats < 1:
        ap.error("--n, --epochs and --repeats must be positive")
    device = pick_device(args.device)
    code = commit()
    f = load_synset(args.file, device=device)
    raw = unwhitened_spec(f.spec)
    data = match_whitening(load_dataset(raw.name, args.root, **raw.extra), f.zca)
    how = file_evaluation(f.meta, data.spec)
    protocol = get_protocol(args.protocol or how.preset, **({} if args.protocol else how.protocol))
    protocol = protocol.with_(epochs=args.epochs, epochs_augmented=0)  # dc-paper's augmented epochs too
    base = {"benchmark": "batched_eval", "file": repo_name(Path(args.file)), "dataset": data.spec.name,
            "n_images": len(f.synset), "model": protocol.model, "protocol": protocol.name, "epochs": args.epochs,
            "device": device.type, "device_name": device_name(device),
            "capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads()}
    done = {r["n_models"] for r in recorded(args.results) if all(r.get(k) == base[k] for k in SETTINGS)}
    for n in ns:
        if n in done and not args.force:
            print(f"N={n}: recorded in {args.results} (--force measures it again)", flush=True)
            continue
        p = protocol.with_(n_models=n)
        ways = {"sequential": lambda: evaluate(f, data, p, device=device),
                "batched": lambda: evaluate(f, data, p, device=device, batch_models=max(n, 2))}
        best: dict[str, float] = {}
        reports: dict[str, EvalReport] = {}
        for r in range(args.repeats):
            for way in (("sequential", "batched") if r % 2 == 0 else ("batched", "sequential")):
                seconds, reports[way] = timed(ways[way])
                best[way] = min(best.get(way, float("inf")), seconds)
        seq, bat = reports["sequential"], reports["batched"]
        rec = {**base, "n_models": n, "repeats": args.repeats,
               "sequential_s": round(best["sequential"], 2), "batched_s": round(best["batched"], 2),
               "speedup": round(best["sequential"] / best["batched"], 3),
               "acc_sequential": [round(100 * a, 2) for a in seq.accuracies],
               "acc_batched": [round(100 * a, 2) for a in bat.accuracies],
               "acc_mean_sequential": round(100 * seq.mean, 2), "acc_mean_batched": round(100 * bat.mean, 2),
               "max_diff_test_images": max(round(abs(a - b) * len(data.test)) for a, b in
                                           zip(seq.accuracies, bat.accuracies)),
               "commit": code, "command": "python " + " ".join(sys.argv)}
        args.results.parent.mkdir(parents=True, exist_ok=True)
        with open(args.results, "a") as out:
            out.write(json.dumps(rec) + "\n")
        print(f"N={n}: sequential {rec['sequential_s']} s, batched {rec['batched_s']} s, "
              f"speed-up {rec['speedup']}x; accuracy {rec['acc_mean_sequential']} vs {rec['acc_mean_batched']} "
              f"(models differ by at most {rec['max_diff_test_images']} test images)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
