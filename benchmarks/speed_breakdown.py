"""Where a step spends its time: ``--what eval``, one training step of the evaluator's fresh ConvNet
on 100 MNIST images (forward, backward, SGD update; channels_last, the fused blocks where
`kernels.use_fused`), or ``--what dc1``, one DC iteration at 1 image per class (as
`speed_dc.py` times it). Profiled with torch.profiler over ``--steps`` steps after a warm-up, its CPU
time is split into convolutions (forward, backward, and the backward's own backward), the fused
instance-norm/ReLU/pool blocks, the same three ops run eagerly (where a gradient needs a graph),
and the rest; and the convolutions' own floor ratio: their time over their FLOPs (FlopCounterMode)
at the fp32 matrix-multiply rate measured in the same run.

    python benchmarks/speed_breakdown.py [--what eval|dc1] [--steps 5]

Appends one record to benchmarks/results/speed.jsonl (with the CPU capability), benchmark
``eval_breakdown`` or ``dc_breakdown``. It answers which kernel holds a step above its floor.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from datadistill.data import load_dataset  # noqa: E402
from datadistill.device import device_name  # noqa: E402
from datadistill.methods import Context  # noqa: E402
from datadistill.methods.dc import DC, DCConfig  # noqa: E402
from datadistill.seeding import make_generator  # noqa: E402
from datadistill.synset import PixelSet  # noqa: E402
from run import commit  # noqa: E402
from speed_common import matmul_gflops, timed, write_record  # noqa: E402
from speed_eval import evaluator_model, train_step  # noqa: E402

# profiler event names of each group (top-level ops only: their children are inside their time)
CONV = ("aten::mkldnn_convolution", "aten::convolution_backward", "aten::_convolution", "aten::convolution",
        "aten::conv2d")
FUSED = ("_InReluPool", "InReluPoolBackward")
EAGER = ("group_norm", "GroupNorm", "relu", "Relu", "threshold", "Threshold", "avg_pool2d", "AvgPool2D")


def group(name: str) -> str:
    if name in CONV or "ConvolutionBackward" in name or "convolution_backward" in name:
        return "convolution"
    if any(f in name for f in FUSED):
        return "fused_block"
    if any(f in name for f in EAGER):
        return "eager_block"
    return "other"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--what", choices=("eval", "dc1"), default="eval")
    ap.add_argument("--steps", type=int, default=5)
    a = ap.parse_args(argv)

    data = load_dataset("mnist")
    if a.what == "eval":
        net, opt = evaluator_model(data.spec)
        x = data.train.images[:100].contiguous(memory_format=torch.channels_last)
        step = train_step(net, opt, x, data.train.labels[:100])
        what, ipc = "train step, 100 images", 10
    else:
        dc = DC(DCConfig(), Context(data, PixelSet.from_real(data.train, 1, make_generator(0, "init")),
                                    torch.device("cpu"), make_generator(0, "m"), 0, 1, iterations=1))

        def step() -> None:
            dc.step(0)

        what, ipc = "DC iteration, 1 image per class", 1
    with FlopCounterMode(display=False) as fc:
        step()
    counts = fc.get_flop_counts()["Global"]
    conv_flops = sum(v for k, v in counts.items() if "convolution" in str(k))
    all_flops = sum(counts.values())
    rate = matmul_gflops() * 1e9
    step_s = timed(step, a.steps)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(a.steps):
            step()
    # self CPU time by group: every event's own time, so nothing is counted twice
    shares = {"convolution": 0.0, "fused_block": 0.0, "eager_block": 0.0, "other": 0.0}
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
        "benchmark": f"{a.what if a.what == 'eval' else 'dc'}_breakdown", "dataset": "mnist", "what": what, "ipc": ipc,
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
