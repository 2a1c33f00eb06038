"""Speed of gradient matching: per-class gradients by ``vmap`` vs a loop over classes, and the time
of one DC iteration, on the current device.

    python benchmarks/speed_dc.py --dataset mnist          # appends to benchmarks/results/speed_dc.jsonl

The per-class real gradients of C classes are the bulk of a matching step; the synthetic ones are
few images but need the graph back to the pixels (double backward).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def timed(fn, repeat: int) -> float:
    fn()  # warm-up
    t = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t) / repeat


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--batch-real", type=int, default=64)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--results", default=str(ROOT / "benchmarks/results/speed_dc.jsonl"))
    p.add_argument("--only-train-step", action="store_true", help="only the inner-training step comparison")
    a = p.parse_args()

    from datadistill.data import load_dataset
    from datadistill.engine import device_name, pick_device
    from datadistill.methods import Context
    from datadistill.methods.dc import DC, DCConfig
    from datadistill.seeding import make_generator
    from datadistill.synset import PixelSet
    from runner import commit

    dev = pick_device(a.device)
    data = load_dataset(a.dataset)
    C = data.spec.num_classes
    rows = []
    for mode in () if a.only_train_step else ("vmap", "loop"):
        s = PixelSet.from_real(data.train, 10, make_generator(0, "init")).to(dev)
        dc = DC(DCConfig(batch_real=a.batch_real, class_grads=mode), Context(data, s, dev, make_generator(0, "m"),
                                                                             0, 10, iterations=1))
        params, buffers = dc._fresh(torch.Generator().manual_seed(0))
        x, _ = data.train.sample_classes(a.batch_real, torch.Generator().manual_seed(1))
        x = x.to(dev).view(C, a.batch_real, *x.shape[1:])
        y = torch.arange(C, device=dev)[:, None].expand(C, a.batch_real)

        def real_grads() -> None:
            dc.class_gradients(params, buffers, x, y)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)

        def match() -> None:
            dc.match_loss(params, buffers, torch.Generator().manual_seed(2)).backward()
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)

        rows.append({"what": "real class gradients", "class_grads": mode, "seconds": round(timed(real_grads, a.repeat), 3)})
        rows.append({"what": "matching step (10 ipc)", "class_grads": mode, "seconds": round(timed(match, a.repeat), 3)})
    # one inner-training SGD step on 10 ipc (100 images): torch.func.grad vs plain autograd (what DC uses)
    from torch.func import grad
    s = PixelSet.from_real(data.train, 10, make_generator(0, "init")).to(dev)
    dc = DC(DCConfig(batch_real=a.batch_real), Context(data, s, dev, make_generator(0, "m"), 0, 10, iterations=1))
    params, buffers = dc._fresh(torch.Generator().manual_seed(0))
    xs, ys = s.images.detach(), s.labels
    leaf = {k: v.detach().requires_grad_() for k, v in params.items()}
    for impl, fn in (("func.grad", lambda: grad(dc._loss)(params, buffers, xs, ys)),
                     ("autograd", lambda: torch.autograd.grad(dc._loss(leaf, buffers, xs, ys), list(leaf.values())))):
        rows.append({"what": "inner training step (100 images)", "impl": impl,
                     "seconds": round(timed(fn, 5 * a.repeat), 3)})
    for ipc in () if a.only_train_step else (1, 10):
        s = PixelSet.from_real(data.train, ipc, make_generator(0, "init")).to(dev)
        dc = DC(DCConfig(batch_real=a.batch_real), Context(data, s, dev, make_generator(0, "m"), 0, ipc, iterations=1))
        rows.append({"what": f"iteration (ipc {ipc}: {dc.outer} x {dc.inner} loops)", "class_grads": "auto",
                     "seconds": round(timed(lambda: dc.step(0), 1), 2)})
    results = Path(a.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    with open(results, "a") as f:
        for r in rows:
            r.update(dataset=a.dataset, model="convnet", batch_real=a.batch_real, device=device_name(dev),
                     commit=commit(), command=f"python benchmarks/speed_dc.py --dataset {a.dataset} "
                                              f"--batch-real {a.batch_real}"
                                              + (" --only-train-step" if a.only_train_step else ""))
            f.write(json.dumps(r) + "\n")
            print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
