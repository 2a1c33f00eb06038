"""One model of an author's own evaluator, as its training script calls it: the reference side of
`parity.py`, run by it in a child process (the reference code reseeds and mutates global state, and
both reference repositories name their modules ``utils`` and ``networks``).

The reference code is not part of this repository: ``--repo`` is a checkout of it elsewhere, and
this script imports its ``utils`` and calls its ``get_network`` and ``evaluate_synset`` unmodified.
``--code`` says which evaluator, with ``args`` set as that code's training script sets them:

* ``dc`` (VICO-UoE/DatasetCondensation ``main.py --method DC``): no DSA, the classic augmentation
  of ``get_daparam(dataset, 'ConvNet', 'ConvNet', ipc)``, and 1000 epochs when it augments, else 300;
* ``dsa`` (the same ``main.py --method DSA --dsa_strategy color_crop_cutout_flip_scale_rotate``;
  DM's ``main_DM.py`` evaluates with the same settings): DSA, 1000 epochs;
* ``mtt`` (GeorgeCazenavette/mtt-distillation ``distill.py``): DSA, 1000 epochs, ``lr_net`` the
  set's learned step size (``args.lr_net = syn_lr.item()``). MTT's ``get_dataset`` has no MNIST or
  Fashion-MNIST branch: its test loader is built here with the DC code's normalization and MTT's
  test batch size (128), and without ZCA (MTT whitens only when ``--zca`` is given; our sets say
  whether they were whitened, and a whitened one is refused here).

One change is made to the reference code, for today's torch: `_forward_reshape`.

The set (``--set``, a ``torch.save``d dict of ``images`` [n, C, H, W] in the dataset's normalized
space, ``labels``, ``lr``) comes from `parity.py`. The model's weights are seeded by the reference's
own ``get_network`` from the clock; the seed it drew is read back (``torch.initial_seed()``) and also
seeds NumPy's global generator, which the DC augmentation draws from, so the line printed (one JSON
object: accuracy in %, the seed, seconds) names a run that can be repeated.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

# The reference datasets' names and normalization (DatasetCondensation ``utils.get_dataset``).
DATASETS = {"mnist": ("MNIST", (0.1307,), (0.3081,)), "fashion_mnist": ("FashionMNIST", (0.2861,), (0.3530,))}
DSA_STRATEGY = "color_crop_cutout_flip_scale_rotate"


def reference_args(code: str, utils, dataset: str, ipc: int, lr: float, epochs: int | None) -> SimpleNamespace:
    """``args`` as the reference training script has set it when it calls ``evaluate_synset``."""
    args = SimpleNamespace(dataset=DATASETS[dataset][0], model="ConvNet", ipc=ipc, device="cpu", batch_train=256,
                           lr_net=0.01, dsa_param=utils.ParamDiffAug(), dsa_strategy="None", dc_aug_param=None)
    if code == "dc":  # main.py --method DC
        args.dsa = False
        args.dc_aug_param = utils.get_daparam(args.dataset, args.model, args.model, ipc)
        args.epoch_eval_train = 1000 if args.dc_aug_param["strategy"] != "none" else 300
    elif code == "dsa":  # main.py --method DSA --dsa_strategy color_crop_cutout_flip_scale_rotate
        args.dsa, args.dsa_strategy, args.epoch_eval_train = True, DSA_STRATEGY, 1000
    elif code == "mtt":  # distill.py's defaults: --dsa True, its strategy, --epoch_eval_train 1000
        args.dsa, args.dsa_strategy, args.epoch_eval_train = True, DSA_STRATEGY, 1000
        args.lr_net = float(lr)  # args.lr_net = syn_lr.item()
        args.texture = False
    else:
        raise ValueError(f"unknown reference code {code!r}; valid: dc, dsa, mtt")
    if epochs is not None:
        args.epoch_eval_train = epochs
    return args


def _forward_reshape(self, x):
    """The reference ``ConvNet.forward`` with ``reshape`` for its ``view``: the one change made to its
    code. Its DSA ``crop`` returns a permuted tensor that for one channel counts as contiguous, today's
    torch carries that channels-last layout through the convolutions, and ``out.view(n, -1)`` then
    fails ("view size is not compatible"); ``reshape`` flattens in the same (C, H, W) order."""
    out = self.features(x)
    return self.classifier(out.reshape(out.size(0), -1))


def test_loader(code: str, utils, dataset: str, root: str):
    import torch
    from torchvision import datasets, transforms

    if code in ("dc", "dsa"):  # the reference's own loader (batch 256)
        return utils.get_dataset(DATASETS[dataset][0], root)[-1]
    name, mean, std = DATASETS[dataset]  # MTT: no branch for it; DC's transform, MTT's batch size
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean=mean, std=std)])
    test = getattr(datasets, name)(root, train=False, download=False, transform=transform)
    return torch.utils.data.DataLoader(test, batch_size=128, shuffle=False, num_workers=0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", required=True, help="a checkout of the reference code (outside this repository)")
    ap.add_argument("--code", required=True, choices=["dc", "dsa", "mtt"])
    ap.add_argument("--set", required=True, help="torch.save'd dict: images, labels, lr, dataset, ipc, zca")
    ap.add_argument("--root", required=True, help="torchvision data root (ROOT/MNIST/raw/...)")
    ap.add_argument("--epochs", type=int, default=None, help="override epoch_eval_train (timing runs only)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)

    import numpy as np
    import torch

    torch.set_num_threads(a.threads)
    s = torch.load(a.set)
    if s.get("zca"):
        raise SystemExit("the set was distilled on ZCA-whitened data; this driver builds no whitened test set")
    sys.path.insert(0, str(Path(a.repo).resolve()))
    import networks  # the reference's
    import utils

    networks.ConvNet.forward = _forward_reshape  # see `_forward_reshape`

    args = reference_args(a.code, utils, s["dataset"], int(s["ipc"]), s["lr"], a.epochs)
    testloader = test_loader(a.code, utils, s["dataset"], a.root)
    channel, im_size, num_classes = s["images"].shape[1], tuple(s["images"].shape[-2:]), int(s["num_classes"])
    net = utils.get_network("ConvNet", channel, num_classes, im_size)  # seeds torch's global RNG from the clock
    seed = torch.initial_seed()
    np.random.seed(seed % 2**32)
    t = time.perf_counter()
    images, labels = s["images"].clone(), s["labels"].clone()
    _, acc_train, acc_test = utils.evaluate_synset(0, net, images, labels, testloader, args)
    out = {"acc": round(100 * float(acc_test), 2), "seed": seed, "seconds": round(time.perf_counter() - t, 1),
           "epochs": int(args.epoch_eval_train), "lr_net": args.lr_net,
           "shims": ["networks.ConvNet.forward: reshape for view"],
           "args": {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool, dict, type(None)))}}
    print("PARITY " + json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
