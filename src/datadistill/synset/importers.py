"""Distilled sets saved by the authors' reference code, read into this library's sets and files.

``datadistill import FILE --from FORMAT --dataset NAME --out OUT`` (`import_set`) reads what a
reference repository's script writes, checks it against the dataset (classes, channels, size) and
writes a distilled-set file (`save_synset`) that ``datadistill evaluate OUT`` scores on any protocol.
One reader per format, registered in `IMPORTERS` (`synset.foreign`, with what the readers share):

- ``dc`` (VICO-UoE/DatasetCondensation ``main.py``, ``main_DM.py``; DC, DSA and DM write the same
  file): ``res_<METHOD>_<DATASET>_<MODEL>_<N>ipc.pt``, a dict whose ``data`` holds one ``[images,
  labels]`` pair per experiment -> `PixelSet` (``--experiment`` picks one, default 0).
- ``mtt`` (GeorgeCazenavette/mtt-distillation ``distill.py``): ``images_<it>.pt`` and
  ``labels_<it>.pt`` (``<it>``: ``best`` or an iteration) -> `PixelSet`. The learned step size is
  only logged (wandb ``Synthetic_LR``), never saved: give it with ``--lr``.
- ``datm`` (NUS-HPC-AI-Lab/DATM ``distill/DATM.py``): ``images_<it>.pt``, ``labels_<it>.pt`` (the
  learned label *logits*, ``[N, C]``) and ``lr_<it>.pt`` -> `PixelSet` with soft labels
  ``softmax(logits)`` trained with soft cross-entropy, as DATM's evaluation does.
- ``haba`` (Huage001/DatasetFactorization ``distill_fac.py``): ``images_best.pt`` (bases) with
  ``weights_best.pt``, or ``images_<it>.pt`` with ``styles_<it>.pt`` (the hallucinators' state dict)
  -> `FactorizedSet`; its step size is only logged, give it with ``--lr``.
- ``dd`` (SsnL/dataset-distillation ``utils/io.py`` ``save_results``): ``results.pth``, the list of
  ``(data, label, lr)`` of every step of every epoch -> `StepSet`.

Files are read with ``torch.load(weights_only=True)`` only: tensors and plain containers. The one
addition to its allowlist is NumPy's scalar and dtype, which are numbers, not code: DC's files keep
their accuracies as NumPy floats, and would otherwise be refused whole.

**Normalization.** The images are stored normalized with the dataset's mean and std as the
reference code computes them; where that differs from this library's spec (MTT, DATM and HaBa
normalize CIFAR-100 with CIFAR-10's statistics; DD has its own CIFAR-10 std and SVHN statistics),
the images are mapped into ours (through [0, 1] pixels), and for HaBa the map is folded into the
hallucinators' last layer (it is affine per channel). ``--mean``/``--std`` name another source
normalization. **ZCA**: MTT, DATM and HaBa whiten CIFAR and Tiny ImageNet (``--zca``, kornia's
``ZCAWhitening(eps=0.1)`` on [0, 1] pixels of the whole training set); a set saved after whitening
needs ``--zca 0.1`` here, so that the file stores the same transform (`data.zca.whiten_dataset`, the
same fit) and evaluation whitens the real data as the set expects. The files do not say whether
they are whitened: the user must.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import torch

from ..config import ConfigError
from ..data import load_dataset, whiten_dataset
from ..data.spec import DatasetSpec
from ..data.zca import ZCA
from ..paths import OutputPathError, check_output_file
from .factorized import FactorizedSet, Hallucinator
from .foreign import (CIFAR10_STATS, IMPORTERS, ForeignSetError, Imported, Importer, ImportOptions, Norm, Target,
                      _beside, _by_class, _class_labels, _images_file, _positional_labels, _positive_lr, _shape, _tensor,
                      load_foreign, sha256)
from .io import SynsetFile, save_synset
from .pixel import PixelSet
from .steps import StepSet


# ------------------------------------------------------------------------------------------ readers
DC_NAME = re.compile(r"^res_(DC|DSA|DM)_")


def read_dc(path: Path, target: Target, opts: ImportOptions) -> Imported:
    """DC/DSA/DM's ``res_*.pt``: ``{"data": [[images, labels], ...], "accs_all_exps": ...}``, one
    pair per experiment (main.py and main_DM.py append one after each and save the whole list)."""
    obj = load_foreign(path)
    if not isinstance(obj, Mapping) or "data" not in obj:
        keys = sorted(map(str, obj)) if isinstance(obj, Mapping) else type(obj).__name__
        raise ForeignSetError(f"{path}: DC's result file is a dict with the key 'data' (a list of [images, labels] "
                              f"per experiment); this holds {keys}")
    runs = obj["data"]
    if not isinstance(runs, (list, tuple)) or not runs:
        raise ForeignSetError(f"{path}: 'data' must be a non-empty list of [images, labels], one per experiment")
    k = 0 if opts.experiment is None else opts.experiment
    if not -len(runs) <= k < len(runs):
        raise ConfigError(f"--experiment {k}: {path.name} holds {len(runs)} experiment(s); valid: 0..{len(runs) - 1}")
    k %= len(runs)
    pair = runs[k]
    if not isinstance(pair, (list, tuple)) or len(pair) != 2:
        raise ForeignSetError(f"{path}: experiment {k} must be a pair [images, labels]")
    spec = target.spec
    images = target.images(pair[0], f"{path.name} experiment {k}'s images")
    labels = _class_labels(pair[1], f"{path.name} experiment {k}'s labels", len(images), spec.num_classes)
    images, labels = _by_class(images, labels, spec.num_classes, f"{path.name} experiment {k}")
    m = DC_NAME.match(path.name)
    method = m.group(1).lower() if m else "dc"
    return Imported(PixelSet(images, labels, spec.num_classes), method, [path],
                    {"experiment": k, "experiments": len(runs)})


def read_mtt(path: Path, target: Target, opts: ImportOptions) -> Imported:
    """MTT's ``images_<it>.pt`` (``[N, C, H, W]``) and ``labels_<it>.pt`` (``[N]`` classes)."""
    images_path, tag = _images_file(path, "mtt")
    labels_path = _beside(images_path, f"labels_{tag}.pt")
    spec = target.spec
    images = target.images(load_foreign(images_path), images_path.name)
    labels = _class_labels(load_foreign(labels_path), labels_path.name, len(images), spec.num_classes)
    images, labels = _by_class(images, labels, spec.num_classes, images_path.name)
    lr = None if opts.lr is None else _positive_lr(opts.lr, "--lr")
    return Imported(PixelSet(images, labels, spec.num_classes, lr=lr, learn_lr=lr is not None), "mtt",
                    [images_path, labels_path], {"iteration": tag})


def read_datm(path: Path, target: Target, opts: ImportOptions) -> Imported:
    """DATM's ``images_<it>.pt``, ``labels_<it>.pt`` (learned logits ``[N, C]``, images class by
    class) and ``lr_<it>.pt`` (the learned step size); by default in the run's ``Normal`` folder."""
    images_path, tag = _images_file(path, "datm", folders=("", "Normal"))
    labels_path = _beside(images_path, f"labels_{tag}.pt")
    lr_path = images_path.with_name(f"lr_{tag}.pt")
    spec = target.spec
    images = target.images(load_foreign(images_path), images_path.name)
    logits = _tensor(load_foreign(labels_path), labels_path.name)
    if logits.ndim == 1 and not logits.is_floating_point():
        raise ForeignSetError(f"{labels_path.name} holds class indices, not DATM's learned label logits [N, C] "
                              "(an MTT file? use --from mtt)")
    want = (len(images), spec.num_classes)
    if tuple(logits.shape) != want or not logits.is_floating_point():
        raise ForeignSetError(f"{labels_path.name} must hold {want[0]}x{want[1]} label logits (one row per image, "
                              f"one column per class), got {logits.dtype} of shape {_shape(logits)}")
    if not bool(torch.isfinite(logits).all()):
        raise ForeignSetError(f"{labels_path.name} holds non-finite values (NaN or inf)")
    labels = _positional_labels(len(images), spec.num_classes, images_path.name)
    files = [images_path, labels_path]
    if lr_path.is_file():
        if opts.lr is not None:
            raise ConfigError(f"--lr: {lr_path.name} holds the learned step size; drop --lr")
        lr = _positive_lr(load_foreign(lr_path), lr_path.name)
        files.append(lr_path)
    elif opts.lr is not None:
        lr = _positive_lr(opts.lr, "--lr")
    else:
        raise ForeignSetError(f"{images_path.name} needs {lr_path.name} beside it (DATM saves the learned step size "
                              "there), or give the step size with --lr")
    # DATM trains on softmax(logits) with soft cross-entropy (its SoftCrossEntropy): soft_ce at temperature 1
    synset = PixelSet(images, labels, spec.num_classes, lr=lr, learn_lr=True,
                      soft_labels=torch.softmax(logits.float(), dim=1), label_loss="soft_ce", label_temperature=1.0)
    return Imported(synset, "datm", files, {"iteration": tag, "soft_labels": "softmax of the learned logits"})


HALLUCINATOR_KEYS = ("enc.weight", "enc.bias", "scale", "shift", "dec.weight", "dec.bias")


def _hallucinators(state: Any, what: str, bases: torch.Tensor, spec: DatasetSpec) -> list[Hallucinator]:
    """HaBa's ``nn.ModuleList`` of ``StyleTranslator`` state dict (``"<h>.enc.weight"`` ...) as our
    hallucinators; anything our `Hallucinator` cannot hold exactly is an error that says what differs."""
    if not isinstance(state, Mapping) or not state:
        raise ForeignSetError(f"{what} must be the hallucinators' state dict (keys '<index>.enc.weight' ...), got "
                              f"{type(state).__name__}")
    groups: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        m = re.match(r"^(\d+)\.(.+)$", str(key))
        if not m:
            raise ForeignSetError(f"{what}: key {key!r} is not a hallucinator's ('<index>.enc.weight' ...)")
        groups.setdefault(int(m.group(1)), {})[m.group(2)] = _tensor(value, f"{what} {key}")
    if sorted(groups) != list(range(len(groups))):
        raise ForeignSetError(f"{what}: hallucinator indices {sorted(groups)} are not 0..{len(groups) - 1}")
    h, w = spec.image_size
    hals = []
    for i in range(len(groups)):
        g = groups[i]
        extra, missing = sorted(set(g) - set(HALLUCINATOR_KEYS)), sorted(set(HALLUCINATOR_KEYS) - set(g))
        if extra or missing:
            raise ForeignSetError(f"{what}: hallucinator {i} differs from HaBa's StyleTranslator (enc conv, scale, "
                                  f"shift, dec transposed conv): extra {extra or 'none'}, missing {missing or 'none'}")
        enc, dec = g["enc.weight"], g["dec.weight"]
        if enc.ndim != 4 or dec.ndim != 4:
            raise ForeignSetError(f"{what}: hallucinator {i}'s enc.weight and dec.weight must be 4-d conv kernels, "
                                  f"got {_shape(enc)} and {_shape(dec)}")
        hidden, cin, k = enc.shape[0], enc.shape[1], enc.shape[2]
        cout = dec.shape[1]
        if enc.shape[3] != k or tuple(dec.shape) != (hidden, cout, k, k):
            raise ForeignSetError(f"{what}: hallucinator {i} has kernels {_shape(enc)} (enc) and {_shape(dec)} (dec); "
                                  "ours use one square kernel size for both")
        if cin != bases.shape[1]:
            raise ForeignSetError(f"{what}: hallucinator {i} takes {cin} channel(s), the bases have {bases.shape[1]}")
        if cout != spec.channels:
            raise ForeignSetError(f"{what}: hallucinator {i} makes {cout}-channel images; {spec.name} has "
                                  f"{spec.channels} channel(s)")
        inner = (1, hidden, h - k + 1, w - k + 1)
        for name in ("scale", "shift"):
            if tuple(g[name].shape) != inner:
                raise ForeignSetError(
                    f"{what}: hallucinator {i}'s {name} is {_shape(g[name])}, but for {h}x{w} images with a {k}x{k} "
                    f"kernel it must be {'x'.join(map(str, inner))} (HaBa's StyleTranslator sizes it for "
                    "image_size=32 unless told otherwise)")
        for name, n in (("enc.bias", hidden), ("dec.bias", cout)):
            if tuple(g[name].shape) != (n,):
                raise ForeignSetError(f"{what}: hallucinator {i}'s {name} is {_shape(g[name])}, expected {n}")
        hal = Hallucinator(int(cin), int(cout), (h, w), int(k), int(hidden))
        hal.load_state_dict({k2: v.float() for k2, v in g.items()})
        hals.append(hal)
    if len({(x.hidden_channels, x.kernel_size) for x in hals}) != 1:
        raise ForeignSetError(f"{what}: the hallucinators differ in size; ours share one architecture")
    return hals


@torch.no_grad()
def _fold_normalization(hals: list[Hallucinator], target: Target) -> None:
    """Map the hallucinations into our normalization by scaling the last layer (affine per channel)."""
    a, c = target.affine()
    for hal in hals:
        hal.dec.bias.mul_(a).add_(c)
        hal.dec.weight.mul_(a.view(1, -1, 1, 1))


def read_haba(path: Path, target: Target, opts: ImportOptions) -> Imported:
    """HaBa's bases ``images_<it>.pt`` (``[C * B, c, H, W]``, class by class) and hallucinators
    (``weights_best.pt`` beside ``images_best.pt``, ``styles_<it>.pt`` beside ``images_<it>.pt``)."""
    images_path, tag = _images_file(path, "haba")
    weights_path = _beside(images_path, "weights_best.pt" if tag == "best" else f"styles_{tag}.pt")
    spec = target.spec
    raw = _tensor(load_foreign(images_path), images_path.name)
    channels = int(raw.shape[1]) if raw.ndim == 4 else None  # single-channel bases are HaBa's option
    # the bases feed the hallucinators: the normalization is mapped at their output (`_fold_normalization`)
    bases = target.images(raw, images_path.name, channels=channels, renormalize=False)
    hals = _hallucinators(load_foreign(weights_path), weights_path.name, bases, spec)
    if target.renormalizes:
        _fold_normalization(hals, target)
    labels = _positional_labels(len(bases), spec.num_classes, images_path.name)
    lr = None if opts.lr is None else _positive_lr(opts.lr, "--lr")
    if opts.ipc is not None and opts.ipc < 1:
        raise ConfigError(f"--ipc must be >= 1, got {opts.ipc}")
    synset = FactorizedSet(bases, labels, spec.num_classes, hals, lr=lr, learn_lr=lr is not None, ipc=opts.ipc)
    return Imported(synset, "haba", [images_path, weights_path], {"iteration": tag})


def _dd_steps(steps: Any, what: str) -> list[tuple[torch.Tensor, torch.Tensor, float]]:
    if not isinstance(steps, (list, tuple)) or not steps:
        raise ForeignSetError(f"{what}: DD's results file is a list of (data, label, lr), one per step of every "
                              f"epoch; this holds {type(steps).__name__}")
    out = []
    for i, step in enumerate(steps):
        if not isinstance(step, (list, tuple)) or len(step) != 3:
            raise ForeignSetError(f"{what}: entry {i} must be a (data, label, lr) triple")
        data, label, lr = step
        out.append((_tensor(data, f"{what} step {i}'s data"), _tensor(label, f"{what} step {i}'s labels"),
                    _positive_lr(lr, f"{what} step {i}'s lr")))
    return out


def _dd_period(steps: list[tuple[torch.Tensor, torch.Tensor, float]]) -> int:
    """The number of distinct steps: DD repeats the same data for every epoch (its ``get_steps``)."""
    n = len(steps)
    for s in range(1, n + 1):
        if n % s == 0 and all(steps[i][0].shape == steps[i % s][0].shape and torch.equal(steps[i][0], steps[i % s][0])
                              and torch.equal(steps[i][1], steps[i % s][1]) for i in range(s, n)):
            return s
    return n


def read_dd(path: Path, target: Target, opts: ImportOptions) -> Imported:
    """DD's ``results.pth``: ``steps * epochs`` triples ``(data [C * k, c, H, W], labels, lr)``, the
    data of step ``s`` repeated in every epoch, each step with its own learned lr."""
    if path.is_dir():
        path = path / "results.pth"
    steps = _dd_steps(load_foreign(path), path.name)
    n_steps = _dd_period(steps)
    spec = target.spec
    images = [target.images(x, f"{path.name} step {i}'s data") for i, (x, _, _) in enumerate(steps[:n_steps])]
    per_class = len(images[0]) // spec.num_classes
    expected = torch.arange(spec.num_classes).repeat_interleave(max(per_class, 1))
    for i, (x, (_, y, _)) in enumerate(zip(images, steps)):
        y = _class_labels(y, f"{path.name} step {i}'s labels", len(x), spec.num_classes)
        if len(x) != len(images[0]) or not torch.equal(y, expected):
            raise ForeignSetError(f"{path.name} step {i}: DD's steps hold the same number of images of every class, "
                                  f"class by class ({len(images[0])} images as {expected.tolist()}); got labels "
                                  f"{y.tolist()}")
    lrs = torch.tensor([lr for _, _, lr in steps])
    synset = StepSet(torch.cat(images), spec.num_classes, n_steps, len(steps) // n_steps, lrs=lrs, learn_lr=True)
    return Imported(synset, "dd", [path], {"steps": n_steps, "epochs": len(steps) // n_steps})


IMPORTERS.add("dc", Importer("dc", read_dc, options=("experiment",)), aliases=("dsa", "dm"))
IMPORTERS.add("mtt", Importer("mtt", read_mtt, options=("lr", "zca"), normalization={"cifar100": CIFAR10_STATS}))
IMPORTERS.add("datm", Importer("datm", read_datm, options=("lr", "zca"), normalization={"cifar100": CIFAR10_STATS}))
IMPORTERS.add("haba", Importer("haba", read_haba, options=("lr", "zca", "ipc"),
                               normalization={"cifar100": CIFAR10_STATS}))
IMPORTERS.add("dd", Importer("dd", read_dd, normalization={  # datasets/__init__.py dataset_normalization
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)),
    "svhn": ((0.4379104971885681, 0.44398033618927, 0.4729299545288086),
             (0.19803012907505035, 0.2010156363248825, 0.19703614711761475))}))


# ----------------------------------------------------------------------------------------- the entry
def read_set(path: str | Path, source: str, dataset: str, *, root: str | Path | None = None,
             options: ImportOptions = ImportOptions()) -> SynsetFile:
    """An author's distilled set as a `SynsetFile` (set, spec, metadata, ZCA transform), not written.

    ``source``: a name in `IMPORTERS`; ``dataset``: the registered dataset the set was distilled on
    (loaded from ``root`` to check the set against it, and with ``options.zca`` to fit the transform).
    """
    entry = IMPORTERS.get(source)
    given = [name for name in ("experiment", "lr", "zca", "ipc") if getattr(options, name) is not None]
    refused = [name for name in given if name not in entry.options]
    if refused:
        takes = ", ".join(f"--{o}" for o in entry.options) or "none of them"
        raise ConfigError(f"--from {entry.name} takes no {', '.join('--' + r for r in refused)} (its options: {takes})")
    data = load_dataset(dataset, root)
    spec = data.spec
    if (options.mean is None) != (options.std is None):
        raise ConfigError("--mean and --std go together: give both, or neither for the reference code's own")
    if options.zca is not None and options.mean is not None:
        raise ConfigError("--mean/--std: a ZCA-whitened set (--zca) has no per-channel normalization to undo")
    if options.mean is not None:
        norm: Norm = (tuple(map(float, options.mean)), tuple(map(float, options.std or ())))
        if len(norm[0]) != spec.channels or len(norm[1]) != spec.channels or min(norm[1]) <= 0:
            raise ConfigError(f"--mean/--std: {spec.name} has {spec.channels} channel(s); give that many values each "
                              "(std > 0)")
    else:
        norm = entry.normalization.get(spec.name, (spec.mean, spec.std))
    zca: ZCA | None = whiten_dataset(data, options.zca).zca if options.zca is not None else None
    target = Target(spec, norm, zca is not None)
    got = entry.read(Path(path), target, options)
    record: dict[str, Any] = {"format": entry.name,
                              "files": [{"name": f.name, "sha256": sha256(f)} for f in got.files], **got.facts}
    if zca is None:  # the normalization the images came in, and whether they were mapped into the spec's
        record["normalization"] = {"mean": list(norm[0]), "std": list(norm[1]), "converted": target.renormalizes}
    return SynsetFile(synset=got.synset, spec=spec, meta={"method": got.method, "imported": record}, zca=zca)


def import_set(path: str | Path, source: str, dataset: str, out: str | Path, *, root: str | Path | None = None,
               options: ImportOptions = ImportOptions(), force: bool = False) -> SynsetFile:
    """Read an author's set (`read_set`) and write it to ``out`` as a distilled-set file, atomically;
    an existing ``out`` is kept unless ``force``. Nothing is written when anything fails."""
    out = Path(out)
    if out.exists() and not force:
        raise OutputPathError(f"{out} exists; pass --force to overwrite it")
    check_output_file(out, "output file")
    if out.resolve() == Path(path).resolve():
        raise OutputPathError(f"{out} is the file being imported; choose another output")
    f = read_set(path, source, dataset, root=root, options=options)
    save_synset(out, f.synset, f.spec, zca=f.zca, **f.meta)
    return f
