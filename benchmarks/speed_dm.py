"""Speed of one DM iteration against the machine's floor and against the reference-style loop.

Floor = the iteration's floating-point work (counted with torch's FlopCounterMode: the real
batch's forward, the synthetic batch's forward and backward) / the fp32 matrix-multiply rate
measured in the same run. "Reference-style" is the loop of the original code: one class at a
time, NCHW, the whole real batch of a class in one forward. Each time is the fastest of ``--steps``
iterations after a warm-up.
``peak_rss_mb``: the process's peak resident memory (MiB) during our timed iterations;
``rss_before_mb``: what it held before them (the loaded dataset, torch's libraries).

    python benchmarks/speed_dm.py [--dataset mnist] [--ipc 10] [--steps 5]
Appends one record to benchmarks/results/speed.jsonl (with the CPU capability it ran on).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from datadistill.augment import DSAConfig, apply, siamese_params_for_classes  # noqa: E402
from datadistill.data import load_dataset  # noqa: E402
from datadistill.device import device_name  # noqa: E402
from datadistill.methods import Context  # noqa: E402
from datadistill.methods.dm import DM, DMConfig  # noqa: E402
from datadistill.models import create_model  # noqa: E402
from datadistill.seeding import make_generator  # noqa: E402
from datadistill.synset import PixelSet  # noqa: E402
from run import commit  # noqa: E402
from speed_common import matmul_gflops, timed, timed_peak, write_record  # noqa: E402


def step_flops(spec, n_real: int, ipc: int) -> float:
    net = create_model("convnet", spec.channels, spec.num_classes, spec.image_size, seed=0)
    x = torch.randn(1, *spec.shape)
    with FlopCounterMode(display=False) as fc:
        net.forward_features(x)
    fwd = fc.get_total_flops()
    C = spec.num_classes
    return fwd * C * n_real + 3 * fwd * C * ipc  # real forward + synthetic forward and backward


def reference_step(data, synset, opt, g, n_real, dsa) -> float:
    """One class at a time, as the original DM code does (same math, no batching, NCHW)."""
    spec = data.spec
    net = create_model("convnet", spec.channels, spec.num_classes, spec.image_size,
                       seed=int(torch.randint(0, 2**62, (1,), generator=g)))
    net.requires_grad_(False)
    loss = torch.zeros(())
    ipc = synset.ipc
    for c in range(spec.num_classes):
        real = data.train.sample(c, n_real, g)
        syn = synset.images[c * ipc : (c + 1) * ipc]
        rp, sp = siamese_params_for_classes(dsa, 1, n_real, ipc, g, spec.image_size, allow_flip=spec.allow_flip)
        fr = net.forward_features(apply(real, rp, dsa)).detach()
        fs = net.forward_features(apply(syn, sp, dsa))
        loss = loss + ((fr.mean(0) - fs.mean(0)) ** 2).sum()
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss.detach())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch-real", type=int, default=256)
    a = p.parse_args()
    data = load_dataset(a.dataset)
    spec = data.spec
    flops = step_flops(spec, a.batch_real, a.ipc)

    s1 = PixelSet.from_real(data.train, a.ipc, make_generator(0, "init"))
    dm = DM(DMConfig(batch_real=a.batch_real), Context(data, s1, torch.device("cpu"), make_generator(0, "m"), 0, a.ipc))
    s2 = PixelSet.from_real(data.train, a.ipc, make_generator(0, "init"))
    opt = torch.optim.SGD([s2.images], lr=1.0, momentum=0.5)
    g = make_generator(0, "ref")
    rate = matmul_gflops()
    ours, mem = timed_peak(lambda: dm.step(0), a.steps)
    ref = timed(lambda: reference_step(data, s2, opt, g, a.batch_real, DSAConfig()), a.steps)
    rate = max(rate, matmul_gflops())  # before and after: the machine's rate when undisturbed
    floor = flops / (rate * 1e9)
    write_record({
        "benchmark": "dm_iteration", "dataset": a.dataset, "ipc": a.ipc, "batch_real": a.batch_real,
        "gflop": round(flops / 1e9, 1), "matmul_gflops": round(rate, 1), "floor_s": round(floor, 3),
        "ours_s": round(ours, 3), "reference_loop_s": round(ref, 3), "ours_over_floor": round(ours / floor, 2),
        "reference_over_floor": round(ref / floor, 2), "speedup_vs_reference_loop": round(ref / ours, 2),
        **mem,
    }, commit(), device_name(torch.device("cpu")))


if __name__ == "__main__":
    main()
