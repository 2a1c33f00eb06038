"""The fused instance-norm + ReLU + 2x2 average-pooling kernel (`datadistill.kernels`) against the eager
ops: one block's forward and backward at the ConvNet's three sizes on MNIST (batch 256, 128 channels,
32x32, 16x16, 8x8), in NCHW and channels_last, alternating the two in each round; and one evaluation
of a 10-images-per-class set (ConvNet, 20 epochs, `dc` protocol) with ``DATADISTILL_KERNELS`` eager
and fused. One thread; one record per run in benchmarks/results/kernels.jsonl.

    python benchmarks/speed_kernels.py [--rounds 5] [--no-record]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "kernels.jsonl"
EVAL = """
import json, time, torch
from datadistill.data import load_dataset
from datadistill.evaluation import evaluate, get_protocol
from datadistill.synset import PixelSet
data = load_dataset("mnist")
s = PixelSet.from_real(data.train, 10, torch.Generator().manual_seed(0))
p = get_protocol("dc", epochs=20, n_models=1)
evaluate(s, data, p.with_(epochs=1))
t = time.perf_counter()
r = evaluate(s, data, p)
print(json.dumps({"seconds": time.perf_counter() - t, "accuracy": r.accuracies[0]}))
"""


def block_times(rounds: int) -> list[dict]:
    import torch

    from datadistill.kernels import eager, extension, in_relu_pool

    assert extension() is not None, "the extension did not build"
    torch.set_num_threads(1)
    out = []
    for layout, fmt in (("nchw", torch.contiguous_format), ("nhwc", torch.channels_last)):
        for size in (32, 16, 8):
            g = torch.Generator().manual_seed(0)
            x = torch.randn(256, 128, size, size, generator=g).contiguous(memory_format=fmt).requires_grad_()
            w, b = (torch.rand(128, generator=g) + 0.5).requires_grad_(), torch.randn(128, generator=g).requires_grad_()
            times = {"eager": [], "fused": []}
            for _ in range(rounds + 1):  # the first round warms up
                for name, f in (("eager", eager), ("fused", in_relu_pool)):
                    t = time.perf_counter()
                    y = f(x, w, b)
                    y.backward(torch.ones_like(y))
                    times[name].append(time.perf_counter() - t)
            e, f_ = statistics.median(times["eager"][1:]), statistics.median(times["fused"][1:])
            out.append({"layout": layout, "shape": [256, 128, size, size], "eager_ms": round(1000 * e, 2),
                        "fused_ms": round(1000 * f_, 2), "speedup": round(e / f_, 2)})
            print(json.dumps(out[-1]), flush=True)
    return out


def eval_times() -> dict:
    res = {}
    for mode in ("eager", "fused"):
        env = {**os.environ, "DATADISTILL_KERNELS": mode, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        p = subprocess.run([sys.executable, "-c", EVAL], env=env, capture_output=True, text=True, check=True, cwd=ROOT)
        res[mode] = json.loads(p.stdout.strip().splitlines()[-1])
        print(mode, res[mode], flush=True)
    res["speedup"] = round(res["eager"]["seconds"] / res["fused"]["seconds"], 2)
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--no-record", action="store_true")
    a = p.parse_args(argv)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from run import commit, machine  # noqa: PLC0415

    load = os.getloadavg()[0]  # other work on the machine shares its cores: the figures say how much
    rec = {"kind": "speed", "blocks": block_times(a.rounds), "evaluation": eval_times(), "threads": 1,
           "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2), "commit": commit(),
           **machine(), "command": f"python benchmarks/speed_kernels.py --rounds {a.rounds}"}
    print(json.dumps(rec))
    if not a.no_record:
        from datadistill.fileio import append_jsonl  # noqa: PLC0415

        append_jsonl(RESULTS, rec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
