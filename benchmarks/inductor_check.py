"""Does torch's inductor compile the ConvNet's blocks on this CPU path, and agree with eager? A minimal
case for issue 32: two DC-zoo blocks (conv, GroupNorm(C, C), ReLU, 2x2 average pooling) on a batch of
32 MNIST-sized inputs, forward and backward, eager and ``torch.compile``d, one thread. Prints the CPU
path, the compile time and the largest relative differences; an abort (the "double free or
corruption" reported on AVX-512 machines) kills this process, so run it as its own process.

    python benchmarks/inductor_check.py [--simdlen 256] [--no-record]

One record per run in benchmarks/results/kernels.jsonl (``"kind": "inductor"``).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--simdlen", type=int, help="inductor's vector width in bits (256: AVX2 code on AVX-512 machines)")
    p.add_argument("--no-record", action="store_true")
    a = p.parse_args()
    if a.simdlen:
        import torch._inductor.config as config

        config.cpp.simdlen = a.simdlen
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 128, 3, padding=3), nn.GroupNorm(128, 128), nn.ReLU(), nn.AvgPool2d(2),
                        nn.Conv2d(128, 128, 3, padding=1), nn.GroupNorm(128, 128), nn.ReLU(), nn.AvgPool2d(2))
    x = torch.randn(32, 1, 28, 28, requires_grad=True)
    want = net(x)
    gwant, = torch.autograd.grad(want.square().sum(), x)
    exact = net.double()(x.double())  # the float64 reference both are judged against
    gexact, = torch.autograd.grad(exact.square().sum(), x)
    net.float()
    t = time.perf_counter()
    compiled = torch.compile(net)
    got = compiled(x)
    ggot, = torch.autograd.grad(got.square().sum(), x)
    seconds = time.perf_counter() - t

    def rel(u: torch.Tensor, v: torch.Tensor) -> float:
        return float((u.double() - v.double()).abs().max() / v.double().abs().max())

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "benchmarks"))
    from run import commit, machine  # noqa: PLC0415

    rec = {"kind": "inductor", "simdlen": a.simdlen, "compile_and_first_step_seconds": round(seconds, 1),
           "torch": torch.__version__, "forward_rel_diff_vs_eager": rel(got.detach(), want.detach()),
           "backward_rel_diff_vs_eager": rel(ggot, gwant), "eager_backward_rel_error": rel(gwant, gexact),
           "inductor_backward_rel_error": rel(ggot, gexact), "commit": commit(), **machine(),
           "command": "python benchmarks/inductor_check.py" + (f" --simdlen {a.simdlen}" if a.simdlen else "")}
    print(json.dumps(rec))
    if not a.no_record:
        from datadistill.fileio import append_jsonl  # noqa: PLC0415

        append_jsonl(root / "benchmarks" / "results" / "kernels.jsonl", rec)


if __name__ == "__main__":
    main()
