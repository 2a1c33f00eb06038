"""Speed of one DC iteration (one ``--iterations`` step: ``outer_loop`` matching steps with
``inner_loop`` epochs of network training between them) against the machine's floor and against
the reference-style loop, at 1 and 10 images per class.

Floor = the iteration's floating-point work / the fp32 matrix-multiply rate measured in the same run.
The work is counted with torch's FlopCounterMode on the reference-style loop: one matching step
(every class's real gradient, its synthetic gradient with the graph, and the second-order backward
of the matching loss to the images) times ``outer_loop``, plus one training epoch on the synthetic
set times ``inner_loop * (outer_loop - 1)``. "Reference-style" is the structure of the authors'
code: one class at a time with the whole real batch of the class in one forward and backward, NCHW,
the network as an ``nn.Module`` trained by ``torch.optim.SGD`` over shuffled batches of 256.
``peak_rss_mb``: the process's peak resident memory (MiB) during our timed iterations;
``rss_before_mb``: what it held before them (the loaded dataset, torch's libraries).

    python benchmarks/speed_dc.py [--dataset mnist] [--ipcs 1,10] [--repeat 3]
Appends one record per size to benchmarks/results/speed.jsonl (with the CPU capability it ran on).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from datadistill.data import load_dataset  # noqa: E402
from datadistill.device import device_name  # noqa: E402
from datadistill.functional import gradient_distance  # noqa: E402
from datadistill.methods import Context  # noqa: E402
from datadistill.methods.dc import DC, DCConfig  # noqa: E402
from datadistill.models import create_model  # noqa: E402
from datadistill.seeding import make_generator  # noqa: E402
from datadistill.synset import PixelSet  # noqa: E402
from run import commit  # noqa: E402
from speed_common import matmul_gflops, timed, timed_peak, write_record  # noqa: E402


class Reference:
    """The authors' loop structure (DC without DSA, a ConvNet without BatchNorm)."""

    def __init__(self, data, ipc: int, n_real: int, outer: int, inner: int, g: torch.Generator) -> None:
        self.data, self.ipc, self.n_real, self.outer, self.inner, self.g = data, ipc, n_real, outer, inner, g
        self.synset = PixelSet.from_real(data.train, ipc, make_generator(0, "init"))
        self.opt_img = torch.optim.SGD([self.synset.images], lr=0.1, momentum=0.5)

    def fresh(self) -> torch.nn.Module:
        s = self.data.spec
        return create_model("convnet", s.channels, s.num_classes, s.image_size,
                            seed=int(torch.randint(0, 2**62, (1,), generator=self.g)))

    def match(self, net: torch.nn.Module) -> None:
        params = list(net.parameters())
        loss = torch.zeros(())
        for c in range(self.data.spec.num_classes):
            real = self.data.train.sample(c, self.n_real, self.g)
            y_real = torch.full((self.n_real,), c)
            gw_real = [t.detach() for t in torch.autograd.grad(F.cross_entropy(net(real), y_real), params)]
            syn = self.synset.images[c * self.ipc : (c + 1) * self.ipc]
            gw_syn = torch.autograd.grad(F.cross_entropy(net(syn), torch.full((self.ipc,), c)), params,
                                         create_graph=True)
            loss = loss + gradient_distance([t[None] for t in gw_real], [t[None] for t in gw_syn])
        self.opt_img.zero_grad()
        loss.backward()
        self.opt_img.step()

    def train_epoch(self, net: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
        x, y = self.synset.images.detach(), self.synset.labels
        perm = torch.randperm(len(y), generator=self.g)
        for i in range(0, len(y), 256):
            idx = perm[i : i + 256]
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()

    def step(self) -> None:
        net = self.fresh()
        net.train()
        opt = torch.optim.SGD(net.parameters(), lr=0.01)
        for ol in range(self.outer):
            self.match(net)
            if ol == self.outer - 1:
                break
            for _ in range(self.inner):
                self.train_epoch(net, opt)

    def flops(self) -> float:
        net = self.fresh()
        with FlopCounterMode(display=False) as fc:
            self.match(net)
        match = fc.get_total_flops()
        with FlopCounterMode(display=False) as fc:
            self.train_epoch(net, torch.optim.SGD(net.parameters(), lr=0.01))
        return self.outer * match + self.inner * (self.outer - 1) * fc.get_total_flops()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--ipcs", default="1,10")
    p.add_argument("--batch-real", type=int, default=256)
    p.add_argument("--repeat", type=int, default=3, help="timed iterations at 1 image per class (one above)")
    a = p.parse_args()
    data = load_dataset(a.dataset)
    for ipc in (int(v) for v in a.ipcs.split(",")):
        s = PixelSet.from_real(data.train, ipc, make_generator(0, "init"))
        dc = DC(DCConfig(batch_real=a.batch_real), Context(data, s, torch.device("cpu"), make_generator(0, "m"), 0,
                                                           ipc, iterations=1))
        ref = Reference(data, ipc, dc.n_real, dc.outer, dc.inner, make_generator(0, "ref"))
        flops = ref.flops()
        repeat, warm = (a.repeat, True) if dc.outer == 1 else (1, False)  # a long iteration needs no warm-up
        rate = matmul_gflops()
        ours, mem = timed_peak(lambda: dc.step(0), repeat, warm)
        ref_s = timed(ref.step, repeat, warm)
        rate = max(rate, matmul_gflops())
        floor = flops / (rate * 1e9)
        write_record({
            "benchmark": "dc_iteration", "dataset": a.dataset, "ipc": ipc, "batch_real": dc.n_real,
            "outer_loop": dc.outer, "inner_loop": dc.inner, "gflop": round(flops / 1e9, 1),
            "matmul_gflops": round(rate, 1), "floor_s": round(floor, 3), "ours_s": round(ours, 3),
            "reference_loop_s": round(ref_s, 3), "ours_over_floor": round(ours / floor, 2),
            "reference_over_floor": round(ref_s / floor, 2), "speedup_vs_reference_loop": round(ref_s / ours, 2),
            **mem,
        }, commit(), device_name(torch.device("cpu")))


if __name__ == "__main__":
    main()
