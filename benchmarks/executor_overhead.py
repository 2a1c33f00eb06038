"""What the executor costs and buys on one machine: the same grid run serially in this process and
on a local Ray cluster of ``--workers`` workers of one thread each (tasks, result files, start-up
included), timed end to end in one run.

Two grids: a 4-model evaluation of a 100-image set (``--eval-epochs`` epochs of the ``dc``
protocol) and a 4-expert buffer (``--expert-epochs`` epochs of MTT's expert training on the whole
training set). Each is run three ways: ``serial`` with all threads (what a plain command does),
``serial`` with one thread (each task as a Ray worker runs it) and ``ray``. The accuracies must be
equal between the one-thread serial run and Ray (same threads per task): the record says so.

    python benchmarks/executor_overhead.py [--workers 2] [--eval-epochs 50] [--expert-epochs 1]

Appends one record per grid and backend to benchmarks/results/executor.jsonl (CPU capability,
threads, workers, wall seconds and the ratio to the one-thread serial run). A grid and backend
already recorded for this commit's settings is skipped (``--force`` reruns it).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from datadistill.device import device_name  # noqa: E402
from datadistill.evaluation import get_protocol  # noqa: E402
from datadistill.executor import make_executor  # noqa: E402
from datadistill.experts import ExpertConfig  # noqa: E402
from datadistill.grids import evaluate_on, train_experts_on  # noqa: E402
from run import commit  # noqa: E402
from speed_common import capability  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "executor.jsonl"


def recorded(settings: dict, results: Path) -> set[str]:
    if not results.is_file():
        return set()
    rows = [json.loads(x) for x in results.read_text().splitlines() if x.strip()]
    return {r["backend"] for r in rows if r.get("settings") == settings}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--set", default=str(ROOT / "benchmarks" / "released" / "dm-mnist-ipc10.safetensors"))
    ap.add_argument("--eval-epochs", type=int, default=50)
    ap.add_argument("--expert-dataset", default="mnist")
    ap.add_argument("--expert-epochs", type=int, default=1)
    ap.add_argument("--only", choices=["evaluate", "experts"])
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    all_threads = torch.get_num_threads()
    code = commit()
    protocol = get_protocol("dc", epochs=args.eval_epochs, n_models=4)
    cfg = ExpertConfig(dataset=args.expert_dataset, n_experts=4, epochs=args.expert_epochs)
    grids = {
        "evaluate": ({"set": Path(args.set).name, "protocol": "dc", "epochs": args.eval_epochs, "models": 4},
                     lambda ex, d: [round(100 * a, 2) for a in
                                    evaluate_on(ex, args.set, protocol, ["convnet"], work_dir=d)["convnet"].accuracies]),
        "experts": ({"dataset": args.expert_dataset, "experts": 4, "epochs": args.expert_epochs},
                    lambda ex, d: [s["final_test_acc"] for s in train_experts_on(ex, cfg, d).summary()["experts"]]),
    }
    backends = [("serial", 1, 1), *([("serial", all_threads, 1)] if all_threads > 1 else []), ("ray", 1, args.workers)]
    for grid, (settings, work) in grids.items():
        if args.only and grid != args.only:
            continue
        settings = {"grid": grid, **settings, "workers": args.workers, "commit": code}
        labels = [f"{n}-{t}thread{'s' * (t > 1)}" + (f"-{w}workers" if n == "ray" else "") for n, t, w in backends]
        done = set() if args.force else recorded(settings, args.results)
        if set(labels) <= done:
            print(f"skip {grid}: recorded in {args.results}")
            continue
        base_s, base_acc = None, None
        for (name, threads, workers), label in zip(backends, labels):
            tmp = Path(tempfile.mkdtemp(prefix="dd-exec-"))
            try:
                t = time.perf_counter()
                with make_executor(name, threads=threads, workers=workers if name == "ray" else None,
                                   progress=False) as ex:
                    accs = work(ex, tmp / "out")
                wall = time.perf_counter() - t
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            if name == "serial" and threads == 1:
                base_s, base_acc = wall, accs
            rec = {"benchmark": "executor", "settings": settings, "backend": label, "threads_per_task": threads,
                   "workers": workers, "wall_s": round(wall, 2), "accuracies": accs,
                   "over_serial_1thread": round(wall / base_s, 3) if base_s else None,
                   "same_as_serial_1thread": accs == base_acc if base_acc is not None and threads == 1 else None,
                   "capability": capability(), "device": device_name(torch.device("cpu")).split(" (")[0],
                   "commit": code, "command": "python " + " ".join(sys.argv)}
            print(json.dumps(rec), flush=True)
            if label in done:
                continue
            args.results.parent.mkdir(parents=True, exist_ok=True)
            with open(args.results, "a") as f:
                f.write(json.dumps(rec) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
