"""What a suite's jobs cost at their whole budget, in node-hours, extrapolated from a few timed units.

    python benchmarks/paper_cost.py                                   # every job of paper-budget, here
    python benchmarks/paper_cost.py --only dm-mnist-ipc10-paper-budget --k 5
    python benchmarks/paper_cost.py --device cuda                     # on a GPU node
    python benchmarks/paper_cost.py --only dm-mnist-ipc1-paper-budget --k 1 --eval-epochs 2 \\
        --results /tmp/cost.jsonl                                     # a quick try, off the records

No job runs in full. For each one, a few units of its work run on this machine and are timed:

- ``distill``: ``k`` iterations through the engine (`engine.run` with ``stop_after=k``), timed by the
  engine per iteration, so start-up, data loading and the final evaluation are left out; with
  ``k > 1`` the first iteration is dropped as warm-up. MTT and HaBa iterate against a stand-in
  buffer: one expert trained on 256 training images, as many epochs as the job needs (what an
  iteration computes does not depend on the experts' values); the job's own experts are a job of
  their own.
- ``experts``: one expert trained ``k`` epochs on the whole training set (each epoch with its test
  pass, as the buffer records it).
- evaluation: one model of the job's protocol on a set of the job's size and type, trained 1 and
  ``1 + E`` epochs and tested on a few images (the difference: seconds per epoch), then trained 1
  epoch and tested on the whole test set (the rest: the per-model cost of building and testing).

Extrapolated: ``iterations x s/it + models x (fixed + epochs x s/epoch)`` for a distillation,
``experts x epochs x s/epoch`` for experts, in hours of one node (the process uses the threads it
is given, or its GPU). One JSON line per job is appended to benchmarks/results/paper_cost.jsonl
(``--results``), marked ``"extrapolation": true`` with its ``k``; a job already measured on the
same device (`datadistill.device.device_name`: the CPU and its threads, or the GPU) is skipped
unless ``--force``. `benchmarks/report.py` tables the records in docs/results.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from datadistill import cli, engine  # noqa: E402
from datadistill.config import RunConfig  # noqa: E402
from datadistill.data import load_dataset  # noqa: E402
from datadistill.device import device_name, pick_device  # noqa: E402
from datadistill.evaluation import evaluate  # noqa: E402
from datadistill.experts import ExpertConfig, train_experts  # noqa: E402
from datadistill.methods.trajectory import TrajectoryMatching  # noqa: E402
from datadistill.models import MODELS  # noqa: E402
from datadistill.resolve import Resolved, check_run, resolve  # noqa: E402
from run import commit  # noqa: E402
from suites import RESULTS_DIR, Job, SuiteError, load_suite, read_records  # noqa: E402

RESULTS = RESULTS_DIR / "paper_cost.jsonl"


def significant(v: float, digits: int = 4) -> float:
    """``v`` to ``digits`` significant digits: hours span 1e-3 (a tiny job) to 1e3 (a buffer), so a
    fixed number of decimals would keep almost nothing of the small ones."""
    return float(f"{v:.{digits}g}")
STANDIN_IMAGES = 256  # training images of the stand-in experts of MTT and HaBa


# -- a job's configs ---------------------------------------------------------------------------------
def job_argv(job: Job, runs: Path) -> list[str]:
    """The job's ``datadistill`` arguments (as `run.py` builds them, without its ``--out``), ``{runs}``
    pointing at ``runs``."""
    args = [a.replace("{runs}", str(runs)) for a in job.args]
    if job.kind == "distill":
        return ["distill", "--method", job.cli_method or job.method, "--dataset", job.dataset, "--ipc", str(job.ipc),
                *args]
    return ["experts", "--dataset", job.dataset, *args]


def distill_config(job: Job, runs: Path, device: str) -> RunConfig:
    cfg = cli.distill_config(cli.parse_args([*job_argv(job, runs), "--device", device]))
    return dataclasses.replace(cfg, eval_every=0, checkpoint_every=0)  # a checkpoint only where the timing stops


# -- timing ------------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_iteration(metrics: Path) -> float:
    """From the engine's cumulative step seconds: the mean after the first iteration (warm-up), or
    the first alone when there is only one."""
    seconds = [r["seconds"] for r in map(json.loads, metrics.read_text().splitlines()) if "seconds" in r]
    if len(seconds) > 1:
        return (seconds[-1] - seconds[0]) / (len(seconds) - 1)
    return seconds[0]


def standin_experts(cfg: RunConfig, res: Resolved, folder: Path, device: torch.device) -> Path:
    """One expert of the run's model, dataset and ZCA, trained on the first images of the training
    set for as many epochs as the run draws from: the stand-in buffer an MTT or HaBa iteration is
    timed against."""
    data = load_dataset(cfg.dataset, cfg.data_root, **cfg.dataset_options)
    first = torch.arange(min(STANDIN_IMAGES, len(data.train)))
    small = dataclasses.replace(data, train=data.train.subset(first), test=data.test.subset(first))
    ecfg = ExpertConfig(dataset=cfg.dataset, model=res.method_cfg.model, n_experts=1,
                        epochs=res.method_cfg.epochs_needed, zca=res.zca, dataset_options=dict(cfg.dataset_options))
    train_experts(ecfg, folder, data=small, device=device)
    return folder


def time_distill(job: Job, device: str, k: int, eval_epochs: int, work: Path) -> dict:
    """Seconds per iteration (``k`` iterations) and per evaluation epoch, and the job's hours."""
    cfg = distill_config(job, work / "runs", device)
    res = resolve(cfg)
    dev = pick_device(device)
    if isinstance(res.method_cfg, TrajectoryMatching):
        experts = standin_experts(cfg, res, work / "standin-experts", dev)
        cfg = dataclasses.replace(cfg, method_config={**cfg.method_config, "experts": str(experts)})
    out = {"iterations": res.iterations, "seconds_per_iteration": 0.0}
    if res.iterations:
        engine.run(cfg, work / "run", stop_after=min(k, res.iterations), progress=False, log=lambda *_: None)
        out["seconds_per_iteration"] = seconds_per_iteration(work / "run" / "metrics.jsonl")
    out.update(time_evaluation(cfg, eval_epochs))
    out["distill_hours"] = out["iterations"] * out["seconds_per_iteration"] / 3600
    return out


def time_evaluation(cfg: RunConfig, extra_epochs: int) -> dict:
    """Per evaluated architecture, one model on a fresh set of the run's size and type
    (`engine.init_synset`; timing does not depend on its values): trained 1 and ``1 + extra_epochs``
    epochs and tested on a few images, whose difference is the seconds per epoch; trained 1 epoch and
    tested on the whole test set, whose rest is the per-model fixed cost (building and testing)."""
    checked = check_run(cfg)  # the data as the run sees it (ZCA included), and the method's checks
    res, data, dev = checked.res, checked.data, checked.device
    if dev.type != "cpu":
        data = dataclasses.replace(data, train=data.train.to(dev), test=data.test.to(dev))
    few = dataclasses.replace(data, test=data.test.subset(torch.arange(min(len(data.test), 10), device=dev)))
    synset = engine.init_synset(res, data, cfg.seed).to(dev)
    models, hours, per_epoch, fixed, epochs = [], 0.0, [], [], []
    for model in res.models:
        (t1, e1), (t2, e2) = (one_model(synset, few, res, model, n, dev) for n in (1, 1 + extra_epochs))
        s_epoch = max(t2 - t1, 0.0) / (e2 - e1)
        s_fixed = max(one_model(synset, data, res, model, 1, dev)[0] - e1 * s_epoch, 0.0)
        full = res.protocol.resolved(data.spec.name, MODELS.canonical(model))
        models.append(model)
        per_epoch.append(round(s_epoch, 5))
        fixed.append(round(s_fixed, 2))
        epochs.append(full.schedule.train_epochs)
        hours += full.n_models * (s_fixed + full.schedule.train_epochs * s_epoch) / 3600
    return {"eval_protocol": res.protocol.name, "eval_models": models, "eval_n_models": res.protocol.n_models,
            "eval_epochs": epochs, "eval_seconds_per_epoch": per_epoch, "eval_fixed_seconds": fixed,
            "eval_hours": hours}


def one_model(synset, data, res: Resolved, model: str, epochs: int, dev: torch.device) -> tuple[float, int]:
    """Seconds of one model of the run's protocol trained ``epochs`` epochs (augmented or not) and
    tested on ``data``'s test set, and the passes over the set that makes."""
    short = res.protocol.with_(epochs=epochs, epochs_augmented=epochs, n_models=1)
    _sync(dev)
    start = time.perf_counter()
    evaluate(synset, data, short, model=model, device=dev)
    _sync(dev)
    return time.perf_counter() - start, short.resolved(data.spec.name, MODELS.canonical(model)).schedule.train_epochs


def time_experts(job: Job, device: str, k: int, work: Path) -> dict:
    """Seconds per expert epoch (one expert, ``k`` epochs, whole training set) and the job's hours."""
    cfg = cli.experts_config(cli.parse_args(job_argv(job, work / "runs")))
    one = dataclasses.replace(cfg, n_experts=1, epochs=k)
    timed = train_experts(one, work / "experts", device=pick_device(device))
    s_epoch = timed.summary()["total_seconds"] / k
    return {"n_experts": cfg.n_experts, "expert_epochs": cfg.epochs, "seconds_per_expert_epoch": round(s_epoch, 3),
            "experts_hours": cfg.n_experts * cfg.epochs * s_epoch / 3600}


# -- records -----------------------------------------------------------------------------------------
def where(device: str) -> dict:
    """The device as records name it, and the CPU capability ATen dispatches to."""
    return {"device": device_name(pick_device(device)), "capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(), "torch": torch.__version__}


def measure(job: Job, suite: str, suite_arg: str, device: str, k: int, eval_epochs: int) -> dict:
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"paper-cost-{job.id}-") as tmp:
        if job.kind == "distill":
            cost = time_distill(job, device, k, eval_epochs, Path(tmp))
        else:
            cost = time_experts(job, device, k, Path(tmp))
    hours = {h: cost.pop(h, 0.0) for h in ("distill_hours", "experts_hours", "eval_hours")}
    return {"what": "paper-cost", "extrapolation": True, "suite": suite, "job": job.id, "kind": job.kind,
            **{f: getattr(job, f) for f in ("method", "dataset", "ipc", "needs") if getattr(job, f) is not None},
            "k": k, **({"eval_epochs_timed": 1 + eval_epochs} if job.kind == "distill" else {}),
            **{key: round(v, 4) if key == "seconds_per_iteration" else v for key, v in cost.items()},
            **{h: significant(v) for h, v in hours.items()}, "node_hours": significant(sum(hours.values())),
            **where(device), "commit": commit(), "measure_seconds": round(time.perf_counter() - start, 1),
            "command": shlex.join(["python", "benchmarks/paper_cost.py", "--suite", suite_arg, "--only", job.id,
                                   "--k", str(k), "--eval-epochs", str(eval_epochs), "--device", device])}


def summary(r: dict) -> str:
    if r["kind"] == "experts":
        return (f"{r['job']}: {r['seconds_per_expert_epoch']:.2f} s per expert epoch x {r['n_experts']} x "
                f"{r['expert_epochs']} = {r['node_hours']:.3g} node-hours ({r['device']}, {r['capability']})")
    evals = ", ".join(f"{n} x {r['eval_n_models']} x ({e} x {s:.4g} s + {f:.3g} s)"
                      for n, e, s, f in zip(r["eval_models"], r["eval_epochs"], r["eval_seconds_per_epoch"],
                                            r["eval_fixed_seconds"]))
    return (f"{r['job']}: {r['seconds_per_iteration']:.4g} s/it x {r['iterations']} = {r['distill_hours']:.3g} h; "
            f"evaluation {evals} = {r['eval_hours']:.3g} h; {r['node_hours']:.3g} node-hours "
            f"({r['device']}, {r['capability']}; extrapolated from k={r['k']})")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", default="paper-budget", help="a suite file or name (default %(default)s)")
    p.add_argument("--only", nargs="+", action="extend", metavar="ID", help="these jobs only (ids, or comma lists)")
    p.add_argument("--k", type=int, default=3, help="iterations (distill) or expert epochs (experts) to time; with "
                   "more than one iteration the first is dropped as warm-up (default %(default)s)")
    p.add_argument("--eval-epochs", type=int, default=50,
                   help="evaluation epochs timed beyond the first, on one model (default %(default)s)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ... (default %(default)s)")
    p.add_argument("--results", type=Path, default=RESULTS, help="append the records here (default %(default)s)")
    p.add_argument("--force", action="store_true", help="measure jobs already measured on this device again")
    a = p.parse_args(argv)
    if a.k < 1 or a.eval_epochs < 1:
        p.error("--k and --eval-epochs must be at least 1")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    try:
        suite = load_suite(a.suite)
        jobs = suite.select(a.only)
        done = read_records(a.results)
    except SuiteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    device = where(a.device)["device"]
    measured = {(r.get("suite"), r.get("job")) for r in done if r.get("device") == device}
    for job in jobs:
        if job.kind not in ("distill", "experts"):
            print(f"skip {job.id}: no cost model for a {job.kind} job", flush=True)
            continue
        if (suite.name, job.id) in measured and not a.force:
            print(f"skip {job.id}: measured on {device} in {a.results} (--force measures it again)", flush=True)
            continue
        print(f"timing {job.id} on {device} ...", flush=True)
        record = measure(job, suite.name, a.suite, a.device, a.k, a.eval_epochs)
        a.results.parent.mkdir(parents=True, exist_ok=True)
        with open(a.results, "a") as f:
            f.write(json.dumps(record) + "\n")
        print(summary(record), flush=True)
    rows = {r["job"]: r for r in read_records(a.results) if r.get("suite") == suite.name and r.get("device") == device}
    total = sum(rows[j.id]["node_hours"] for j in jobs if j.id in rows)
    print(f"{suite.name}: {total:.3g} node-hours for the {sum(j.id in rows for j in jobs)} of {len(jobs)} jobs "
          f"measured on {device} (extrapolated; records in {a.results})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
