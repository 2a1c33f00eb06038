"""Where the evaluator's training step spends its time: one step of a fresh ConvNet on 100 MNIST
images (forward, backward, SGD update; channels_last, the fused blocks where `kernels.use_fused`),
profiled with torch.profiler over ``--steps`` steps after a warm-up, its CPU time split into
convolutions (forward and backward), the fused instance-norm/ReLU/pool blocks, and the rest; and the
convolutions' own floor ratio: their time over their FLOPs (FlopCounterMode) at the fp32
matrix-multiply rate measured in the same run.

    python benchmarks/speed_breakdown.py [--steps 5]

Appends one record to benchmarks/results/speed.jsonl (with the CPU capability), benchmark
``eval_breakdown``. It answers which kernel holds a step above its floor.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from datadistill.data import load_dataset  # noqa: E402
from datadistill.device import device_name  # noqa: E402
from datadistill.functional.chunked import chunked_backward, pick_chunk  # noqa: E402
from datadistill.models import create_model  # noqa: E402
from run import commit  # noqa: E402
from speed_common import matmul_gflops, timed, write_record  # noqa: E402

# profiler event names of each group (top-level ops only: their children are inside their time)
CONV = ("aten::mkldnn_convolution", "aten::convolution_backward", "aten::_convolution", "aten::convolution",
        "aten::conv2d")
FUSED = ("_InReluPool", "InReluPoolBackward")


def group(name: str) -> str:
    if name in CONV or "ConvolutionBackward" in name:
        return "convolution"
    if any(f in name for f in FUSED):
        return "fused_block"
    return "other"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=5)
    a = ap.parse_args(argv)

    data = load_dataset("mnist")
    spec = data.spec
    net = create_model("convnet", spec.channels, spec.num_classes, spec.image_size, seed=0)
    net = net.to(memory_format=torch.channels_last)
    chunk = pick_chunk(torch.device("cpu"), independent=True)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = data.train.images[:100].contiguous(memory_format=torch.channels_last)
    y = data.train.labels[:100]

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        chunked_backward(net, x, y, chunk)  # as the evaluator trains (speed_eval.py)
        opt.step()

    with FlopCounterMode(display=False) as fc:
        F.cross_entropy(net(x), y).backward()
    counts = fc.get_flop_counts()["Global"]
    conv_flops = sum(v for k, v in counts.items() if "convolution" in str(k))
    all_flops = sum(counts.values())
    rate = matmul_gflops() * 1e9
    step_s = timed(step, a.steps)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(a.steps):
            step()
    # self CPU time by group: every event's own time, so nothing is counted twice
    shares = {"convolution": 0.0, "fused_block": 0.0, "other": 0.0}
    for e in prof.events():
        g = group(e.name)
        # an op under a convolution (its gemm, its reorders) is the convolution's time
        p, up = e.cpu_parent, None
        while p is not None:
            if group(p.name) != "other":
                up = group(p.name)
                break
            p = p.cpu_parent
        shares[up or g] += e.self_cpu_time_total
    total = sum(shares.values())
    conv_s = shares["convolution"] / total * step_s
    write_record({
        "benchmark": "eval_breakdown", "dataset": "mnist", "what": "train step, 100 images", "ipc": 10,
        "matmul_gflops": round(rate / 1e9, 1), "gflop": round(all_flops / 1e9, 2),
        "floor_s": round(all_flops / rate, 4), "ours_s": round(step_s, 4),
        "ours_over_floor": round(step_s / (all_flops / rate), 2),
        "share": {k: round(v / total, 3) for k, v in shares.items()},
        "conv_gflop": round(conv_flops / 1e9, 2), "conv_s": round(conv_s, 4),
        "conv_over_floor": round(conv_s / (conv_flops / rate), 2),
    }, commit(), device_name(torch.device("cpu")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
