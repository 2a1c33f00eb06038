"""Parity of a paper-exact evaluation preset with the authors' own evaluator.

Two ways, each appending one record to ``benchmarks/results/parity.jsonl`` when it is done:

**Both sides here** (``--set``): one of our distilled-set files is evaluated by the authors' own
``evaluate_synset`` (``--reference-repo``: a checkout of their code *outside* this repository; it is
imported, never copied in) and by ``--preset``, ``--models`` models each side at the preset's
epochs. The reference side runs as `parity_reference.py` describes (``args`` as the authors'
training script sets them), one child process per model, with ``--reference-python`` (an
environment with what their code imports, e.g. kornia for MTT's). Presets and the code they are
compared with: ``dc-paper`` and ``dsa-paper`` (= ``dm-paper``): VICO-UoE/DatasetCondensation;
``mtt-paper``: GeorgeCazenavette/mtt-distillation.

**A set the authors scored** (``--anchor``, an ``.npz`` with ``images`` [n, C, H, W] normalized as
the dataset's loader normalizes them, class-sorted ``labels`` and ``accs``: the reference
evaluator's accuracies of that set, fractions): only our side runs.

Each model is its own unit of work: its accuracy is appended to
``benchmarks/results/parity-models.jsonl`` as soon as it finishes (with its side, seed and
seconds), and a rerun skips the models already there, so an interrupted run resumes. The record has
both sides' accuracies, means and population stds (as the papers report) and 95% intervals of the
means, and ``agreement``: whether the two means agree within the sides' noise, by the criterion it
names (`agreement`), with the Welch t-test's p-value beside it.

    python benchmarks/parity.py --set benchmarks/released/dsa-mnist-ipc1.safetensors --preset dsa-paper \\
        --reference-repo ../ext/DatasetCondensation --reference-commit 53f63a6 \\
        --reference-python ../ext/venv/bin/python --models 3
    python benchmarks/parity.py --anchor ../shared/anchors/ref_dm_mnist_ipc10_200it.npz \\
        --dataset mnist --preset dsa-paper --epochs 300 --models 5
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import commit, machine, repo_name  # noqa: E402

from datadistill.data import load_dataset  # noqa: E402
from datadistill.data.registry import default_root  # noqa: E402
from datadistill.evaluation import evaluate, get_protocol  # noqa: E402
from datadistill.synset import PixelSet, load_synset  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
T95 = {2: 12.71, 3: 4.30, 4: 3.18, 5: 2.78, 6: 2.57, 7: 2.45, 8: 2.36, 9: 2.31, 10: 2.26}  # Student t, 2-sided
# preset -> (the reference evaluator `parity_reference.py` runs, the repository it comes from)
REFERENCE = {"dc-paper": ("dc", "VICO-UoE/DatasetCondensation"), "dsa-paper": ("dsa", "VICO-UoE/DatasetCondensation"),
             "mtt-paper": ("mtt", "GeorgeCazenavette/mtt-distillation")}
CRITERION = "within_2se"
CRITERION_TEXT = ("|acc_mean - reference_mean| <= 2 * sqrt(s^2/n + s_ref^2/n_ref), s and s_ref the sample "
                  "standard deviations (n - 1) of the two sides' accuracies")


def summary(accs: list[float]) -> dict:
    """Mean, population std (as the papers report) and a 95% interval of the mean (Student t)."""
    n = len(accs)
    mean = sum(accs) / n
    std = math.sqrt(sum((a - mean) ** 2 for a in accs) / n)
    sample_std = math.sqrt(sum((a - mean) ** 2 for a in accs) / (n - 1)) if n > 1 else float("nan")
    half = T95.get(n, 1.96) * sample_std / math.sqrt(n) if n > 1 else float("nan")
    return {"mean": round(mean, 2), "std": round(std, 2), "ci95": [round(mean - half, 2), round(mean + half, 2)]}


def agreement(ours: list[float], ref: list[float]) -> dict:
    """Whether two sides' mean accuracies agree within their noise (`CRITERION`): the difference is
    at most twice the combined standard error of the two means. The Welch t-test of the same
    difference is recorded beside it (``welch_p``), as information."""
    from scipy import stats  # noqa: PLC0415

    n1, n2 = len(ours), len(ref)
    m1, m2 = sum(ours) / n1, sum(ref) / n2
    v1 = sum((a - m1) ** 2 for a in ours) / (n1 - 1)
    v2 = sum((a - m2) ** 2 for a in ref) / (n2 - 1)
    se = math.sqrt(v1 / n1 + v2 / n2)
    diff = m1 - m2
    out = {"criterion": CRITERION, "definition": CRITERION_TEXT, "diff": round(diff, 3), "combined_se": round(se, 3),
           "agree": abs(diff) <= 2 * se}
    if se > 0:
        df = se**4 / ((v1 / n1) ** 2 / (n1 - 1) + (v2 / n2) ** 2 / (n2 - 1)) if v1 + v2 > 0 else float("inf")
        t = diff / se
        out.update({"welch_t": round(t, 3), "welch_df": round(df, 2), "welch_p": round(float(2 * stats.t.sf(abs(t), df)), 4)})
    return out


def done_models(k: dict, out: Path) -> dict[int, dict]:
    path = out / "parity-models.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    return {r["model_index"]: r for r in rows if all(r.get(f) == v for f, v in k.items())}


def append(out: Path, name: str, rec: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / name, "a") as f:
        f.write(json.dumps(rec) + "\n")
    print(json.dumps(rec), flush=True)


def protocol_for(preset: str, dataset: str, epochs: int | None):
    """The preset for one model, resolved for ``dataset`` (dc-paper's epochs depend on it); ``epochs``
    overrides every epoch count of the preset (timing runs)."""
    over = {"n_models": 1}
    if epochs:
        augmented = get_protocol(preset).augment.epochs_augmented
        over |= {"epochs": epochs} | ({"epochs_augmented": epochs} if augmented else {})
    return get_protocol(preset, **over).resolved(dataset, "convnet")


def our_model(synset, data, base, i: int) -> tuple[float, int, float]:
    """Accuracy (%), seed and seconds of our model ``i`` (seed ``i * 1000``, as before)."""
    t = time.perf_counter()
    rep = evaluate(synset, data, base.with_(seed=i), progress=False)
    return round(100 * rep.accuracies[0], 2), rep.seeds[0], round(time.perf_counter() - t, 1)


def reference_model(a: argparse.Namespace, code: str, set_file: Path, root: str) -> dict:
    """One model of the authors' evaluator, in a child process (`parity_reference.py`)."""
    cmd = [a.reference_python, str(HERE / "parity_reference.py"), "--repo", a.reference_repo, "--code", code,
           "--set", str(set_file), "--root", root, "--threads", str(torch.get_num_threads())]
    if a.epochs:
        cmd += ["--epochs", str(a.epochs)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("PARITY ")]
    if p.returncode or not lines:
        raise SystemExit(f"the reference evaluator failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
    return json.loads(lines[-1][len("PARITY "):])


def reference_commit(a: argparse.Namespace) -> str:
    if a.reference_commit:
        return a.reference_commit
    p = subprocess.run(["git", "-C", a.reference_repo, "rev-parse", "HEAD"], capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"{a.reference_repo} is not a git checkout: pass the commit it was exported from "
                         "as --reference-commit")
    return p.stdout.strip()


def run_set(a: argparse.Namespace, out: Path) -> int:
    if a.preset not in REFERENCE:
        raise SystemExit(f"--set compares {', '.join(REFERENCE)} with the authors' code; got --preset {a.preset!r}")
    repo = Path(a.reference_repo or "")
    if not (repo / "utils.py").is_file() or "def evaluate_synset" not in (repo / "utils.py").read_text():
        raise SystemExit(f"--reference-repo {a.reference_repo!r} is not a checkout with utils.py's evaluate_synset")
    code, ref_name = REFERENCE[a.preset]
    f = load_synset(a.set)
    data = load_dataset(f.spec.name, a.root)
    base = protocol_for(a.preset, f.spec.name, a.epochs)
    root = str(a.root or default_root())
    ref_commit = reference_commit(a)
    k = {"set": repo_name(Path(a.set)), "preset": a.preset, "epochs": base.schedule.epochs}
    k_ref = {**k, "side": "reference", "reference": ref_name, "reference_commit": ref_commit}
    k_ours = {**k, "side": "ours"}
    where, code_commit = machine(), commit()  # the code this process runs, whatever the checkout becomes
    x, y = f.synset.materialize()[:2]
    with tempfile.TemporaryDirectory() as tmp:
        set_file = Path(tmp) / "set.pt"
        torch.save({"images": x.detach().float().cpu(), "labels": y.long().cpu(), "lr": f.synset.learned_lr(),
                    "dataset": f.spec.name, "ipc": f.meta.get("ipc"), "num_classes": f.spec.num_classes,
                    "zca": f.zca is not None}, set_file)
        for i in range(a.models):  # the sides alternate, so an interrupted run leaves them balanced
            if i not in done_models(k_ref, out):
                r = reference_model(a, code, set_file, root)
                if r["epochs"] != base.schedule.epochs:
                    raise SystemExit(f"the reference trained {r['epochs']} epochs, the preset {base.schedule.epochs}: "
                                     "they are not the same protocol")
                append(out, "parity-models.jsonl", {**k_ref, "model_index": i, "seed": r["seed"], "acc": r["acc"],
                                                   "seconds": r["seconds"], "lr": r["lr_net"], "args": r["args"],
                                                   "shims": r.get("shims", []), **where,
                                                   "commit": code_commit})
            if i not in done_models(k_ours, out):
                acc, seed, sec = our_model(f, data, base, i)
                append(out, "parity-models.jsonl", {**k_ours, "model_index": i, "seed": seed, "acc": acc,
                                                   "seconds": sec, **where, "commit": code_commit})
    ref_rows = [r for i, r in sorted(done_models(k_ref, out).items()) if i < a.models]
    our_rows = [r for i, r in sorted(done_models(k_ours, out).items()) if i < a.models]
    accs, ref = [r["acc"] for r in our_rows], [r["acc"] for r in ref_rows]
    ours_s, ref_s = summary(accs), summary(ref)
    append(out, "parity.jsonl", {
        "anchor": Path(a.set).name, "set": k["set"], "dataset": f.spec.name, "preset": a.preset,
        "epochs": base.schedule.epochs,
        "n_models": len(accs), "accuracies": accs, "acc_mean": ours_s["mean"], "acc_std": ours_s["std"],
        "ci95": ours_s["ci95"], "seeds": [r["seed"] for r in our_rows],
        "seconds_per_model": round(sum(r["seconds"] for r in our_rows) / len(our_rows), 1),
        "reference": ref_name, "reference_commit": ref_commit, "reference_function": "utils.evaluate_synset",
        "reference_args": ref_rows[-1].get("args"), "reference_n_models": len(ref), "reference_accs": ref,
        "reference_mean": ref_s["mean"], "reference_std": ref_s["std"], "reference_ci95": ref_s["ci95"],
        "reference_seeds": [r["seed"] for r in ref_rows], "reference_shims": ref_rows[-1].get("shims", []),
        "reference_seconds_per_model": round(sum(r["seconds"] for r in ref_rows) / len(ref_rows), 1),
        "agreement": agreement(accs, ref), "protocol": base.with_(n_models=len(accs)).to_dict(),
        "lr": f.synset.learned_lr() if base.optimizer.use_learned_lr and f.synset.learned_lr() else base.optimizer.lr,
        **where, "commit": code_commit, "command": "python " + shlex.join(sys.argv),
    })
    return 0


def run_anchor(a: argparse.Namespace, out: Path) -> int:
    z = np.load(a.anchor)
    data = load_dataset(a.dataset, a.root)
    images, labels = torch.from_numpy(z["images"]).float(), torch.from_numpy(z["labels"]).long()
    synset = PixelSet(images, labels, data.spec.num_classes)
    overrides = {"n_models": 1} | ({"epochs": a.epochs} if a.epochs else {})
    base = get_protocol(a.preset, **overrides)
    k = {"anchor": Path(a.anchor).name, "dataset": a.dataset, "preset": a.preset, "epochs": base.schedule.epochs}
    where, code = machine(), commit()
    have = done_models(k, out)
    for i in range(a.models):
        if i not in have:
            acc, seed, sec = our_model(synset, data, base, i)
            append(out, "parity-models.jsonl", {**k, "model_index": i, "seed": seed, "acc": acc, "seconds": sec,
                                               **where, "commit": code})
    accs = [r["acc"] for i, r in sorted(done_models(k, out).items()) if i < a.models]
    ref = [round(100 * float(v), 2) for v in z["accs"]]
    ours_s, ref_s = summary(accs), summary(ref)
    append(out, "parity.jsonl", {
        **k, "n_models": len(accs), "accuracies": accs, "acc_mean": ours_s["mean"], "acc_std": ours_s["std"],
        "ci95": ours_s["ci95"], "reference_accs": ref, "reference_mean": ref_s["mean"], "reference_std": ref_s["std"],
        "agreement": agreement(accs, ref), "protocol": base.with_(n_models=len(accs)).to_dict(), **where,
        "commit": code, "command": "python " + shlex.join(sys.argv),
    })
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--set", help="one of our distilled-set files, evaluated by both sides")
    src.add_argument("--anchor", help=".npz with images, labels and the reference's accs (our side only)")
    ap.add_argument("--reference-repo", help="--set: a checkout of the authors' code, outside this repository")
    ap.add_argument("--reference-commit", help="--set: the commit of that checkout (default: git rev-parse in it)")
    ap.add_argument("--reference-python", default=sys.executable,
                    help="--set: the Python that runs the authors' code (default: this one)")
    ap.add_argument("--dataset", default="mnist", help="--anchor: its dataset (a --set file names its own)")
    ap.add_argument("--root", default=None, help="data root (default: the library's)")
    ap.add_argument("--preset", default="dsa-paper")
    ap.add_argument("--epochs", type=int, default=None, help="the preset's epochs (default: the preset's own)")
    ap.add_argument("--models", type=int, default=5, help="models on each side")
    ap.add_argument("--threads", type=int, default=None, help="torch threads, each side (default: torch's)")
    ap.add_argument("--results", default=str(RESULTS), help="folder of the records (default: benchmarks/results)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.models < 2:
        raise SystemExit("--models must be at least 2: the record compares the spread of both sides")
    if a.set and not a.reference_repo:
        raise SystemExit("--set needs --reference-repo: a checkout of the authors' code")
    a.preset = get_protocol(a.preset).name  # an alias (dm-paper) records as the preset it names
    out = Path(a.results)
    return run_set(a, out) if a.set else run_anchor(a, out)


if __name__ == "__main__":
    raise SystemExit(main())
