"""Speed of the evaluator against the machine's floor: one training step of a fresh ConvNet on 100
and on 256 images (forward, backward, SGD update), the test pass over the real test set, and the
seconds of one 300-epoch evaluation model of a 100-image set (the reference evaluator's 301 passes
at one batch each, DSA, then the test pass), timed end to end.

Floor = floating-point work (torch's FlopCounterMode) / the fp32 matrix-multiply rate measured in
the same run: a step is its forward and backward, the test pass its forward. Each time is the
fastest of ``--steps`` repetitions after a warm-up. Beside each training time, ``peak_rss_mb``: the
process's peak resident memory (MiB) during those calls; ``rss_before_mb``: what it held before them.

    python benchmarks/speed_eval.py [--dataset mnist] [--steps 5] [--model-epochs 300]

Appends one record per measurement to benchmarks/results/speed.jsonl (with the CPU capability).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from datadistill.data import load_dataset  # noqa: E402
from datadistill.device import device_name  # noqa: E402
from datadistill.evaluation import evaluate, get_protocol  # noqa: E402
from datadistill.functional.chunked import chunked_backward, pick_chunk  # noqa: E402
from datadistill.models import create_model  # noqa: E402
from datadistill.synset import PixelSet  # noqa: E402
from datadistill.train import accuracy  # noqa: E402
from run import commit  # noqa: E402
from speed_common import matmul_gflops, memory, reset_peak_rss, timed, timed_peak, write_record  # noqa: E402


def flops(fn) -> float:
    with FlopCounterMode(display=False) as fc:
        fn()
    return float(fc.get_total_flops())


def evaluator_model(spec) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """The evaluator's fresh ConvNet (seed 0, channels_last) and its SGD."""
    net = create_model("convnet", spec.channels, spec.num_classes, spec.image_size, seed=0)
    net = net.to(memory_format=torch.channels_last)
    return net, torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)


def train_step(net: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor):
    """One training step as the evaluator runs it: forward and backward in CPU chunks, SGD update."""
    chunk = pick_chunk(torch.device("cpu"), independent=True)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        chunked_backward(net, x, y, chunk)
        opt.step()

    return step


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--model-epochs", type=int, default=300, help="epochs of the timed model (0: skip it)")
    args = ap.parse_args(argv)
    code, where = commit(), device_name(torch.device("cpu"))
    data = load_dataset(args.dataset)
    spec = data.spec
    rate = matmul_gflops() * 1e9
    net, opt = evaluator_model(spec)
    base = {"benchmark": "eval", "dataset": args.dataset, "matmul_gflops": round(rate / 1e9, 1)}
    for n in (100, 256):
        x = data.train.images[:n].contiguous(memory_format=torch.channels_last)
        y = data.train.labels[:n]
        step = train_step(net, opt, x, y)
        work = flops(lambda: F.cross_entropy(net(x), y).backward())
        floor, (ours, mem) = work / rate, timed_peak(step, args.steps)
        write_record({**base, "what": f"train step, {n} images", "ipc": n // spec.num_classes,
                      "gflop": round(work / 1e9, 2), "floor_s": round(floor, 4), "ours_s": round(ours, 4),
                      "ours_over_floor": round(ours / floor, 2), **mem}, code, where)
    test = data.test
    with torch.no_grad():
        work = flops(lambda: net(test.images[:500])) * len(test) / 500
    floor = work / rate
    ours = timed(lambda: accuracy(net, test), max(1, args.steps // 2))
    write_record({**base, "what": f"test pass, {len(test)} images", "ipc": 0, "gflop": round(work / 1e9, 2),
                  "floor_s": round(floor, 3), "ours_s": round(ours, 3), "ours_over_floor": round(ours / floor, 2)},
                 code, where)
    if args.model_epochs:
        g = torch.Generator().manual_seed(0)
        s = PixelSet.from_real(data.train, 10, g)
        p = get_protocol("dsa-paper", epochs=args.model_epochs, n_models=1)
        before = reset_peak_rss()
        t = time.perf_counter()
        evaluate(s, data, p)
        write_record({**base, "what": f"one dsa-paper model, {args.model_epochs} epochs, 100 images",
                      "ipc": 10, "ours_s": round(time.perf_counter() - t, 1), **memory(before)},
                     code, where)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
