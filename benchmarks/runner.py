"""Resumable benchmark jobs: each job is one `datadistill distill` command run in its own process;
its result is appended to a JSON-lines file as soon as it finishes, and a job whose record is
already there is skipped, so an interrupted suite continues where it stopped (each run directory
also resumes from its own checkpoint)."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Job:
    method: str
    dataset: str
    ipc: int
    setting: str
    args: list[str] = field(default_factory=list)  # extra CLI arguments / key=value overrides
    extra: dict = field(default_factory=dict)  # further fields for the record (e.g. a baseline's step size)
    cli_method: str | None = None  # the method to run when the record's ``method`` names a baseline of it

    @property
    def key(self) -> tuple:
        return record_key(vars(self) | self.extra)

    def run_dir(self, runs: Path) -> Path:
        tail = f"-{self.extra['step_size']}-lr" if self.extra.get("step_size") else ""
        return runs / f"{self.method}-{self.dataset}-ipc{self.ipc}-{self.setting}{tail}"


def commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    # the records themselves (benchmarks/results) do not make the code dirty
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!benchmarks/results"],
                           cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")


def record_key(r: dict) -> tuple:
    key = (r["method"], r["dataset"], r["ipc"], r["setting"])
    return key + ((r["step_size"],) if r.get("step_size") else ())


def done_keys(results: Path) -> set[tuple]:
    if not results.is_file():
        return set()
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    return {record_key(r) for r in rows if "method" in r}  # other rows (e.g. expert training) have no key


def repo_name(path: Path) -> str:
    """``path`` as records name it: relative to the repository when inside it, else absolute."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def evaluate_json(cmd: list[str]) -> tuple[dict, float]:
    """Run ``cmd`` (a `datadistill evaluate ... --json` command line) in its own process; returns its
    reports (model name -> report) and the wall seconds it took."""
    print("$ " + shlex.join(cmd), flush=True)
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "datadistill.cli", *cmd[1:]], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out[out.index("{"):]), time.perf_counter() - t


def run_full(job: Job, results: Path) -> dict:
    """The ``full`` reference row: the protocol on the whole training set (``job.args`` holds the
    evaluation overrides, e.g. a CPU-sized number of epochs)."""
    cmd = ["datadistill", "evaluate", "--full", "--dataset", job.dataset, "--json", *job.args]
    reports, wall = evaluate_json(cmd)
    from datadistill.engine import device_name
    import torch

    records = []
    for model, ev in reports.items():
        records.append({
            "method": "full", "dataset": job.dataset, "ipc": job.ipc, "setting": job.setting, "model": model,
            "protocol": ev["protocol"]["name"], "epochs": ev["protocol"]["epochs"],
            "augment": ev["protocol"]["augment"], "n_models": ev["n_models"],
            "acc_mean": round(ev["acc_mean"], 2), "acc_std": round(ev["acc_std"], 2),
            "accuracies": [round(100 * a, 2) for a in ev["accuracies"]], "iterations": 0,
            "seconds_per_iteration": 0.0, "eval_seconds": round(ev["seconds"], 1), "wall_seconds": round(wall, 1),
            "peak_mem_mb": None, "device": device_name(torch.device("cpu")), "commit": commit(),
            "command": shlex.join(cmd),
        })
    with open(results, "a") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return records[0]


def run_job(job: Job, runs: Path, results: Path) -> dict:
    if job.method == "full":
        return run_full(job, results)
    out = job.run_dir(runs)
    cmd = ["datadistill", "distill", "--method", job.cli_method or job.method, "--dataset", job.dataset,
           "--ipc", str(job.ipc),
           "--out", str(out.relative_to(ROOT)), *job.args]
    resume = ["--resume"] if (out / "config.yaml").is_file() else []
    print("$ " + shlex.join(cmd + resume), flush=True)
    code = commit()  # the code the run executes: taken before it starts, not when it ends
    subprocess.run([sys.executable, "-m", "datadistill.cli", *cmd[1:], *resume, "--no-progress"], cwd=ROOT,
                   check=True)
    from datadistill.synset import read_meta

    meta = read_meta(out / "distilled.safetensors")
    if "--iterations" in job.args and meta["iterations"] != int(job.args[job.args.index("--iterations") + 1]):
        raise RuntimeError(f"{out} holds a run of {meta['iterations']} iterations, not the job's "
                           f"{job.args[job.args.index('--iterations') + 1]}: move it away or choose another --runs")
    records = []
    for model, ev in meta["evaluation"].items():
        records.append({
            "method": job.method, "dataset": job.dataset, "ipc": job.ipc, "setting": job.setting, "model": model,
            "protocol": ev["protocol"]["name"], "epochs": ev["protocol"]["epochs"],
            "augment": ev["protocol"]["augment"], "n_models": ev["n_models"],
            "acc_mean": round(ev["acc_mean"], 2), "acc_std": round(ev["acc_std"], 2),
            "accuracies": [round(100 * a, 2) for a in ev["accuracies"]],
            "iterations": meta["iterations"], "seconds_per_iteration": round(meta["seconds_per_iteration"], 3),
            "eval_seconds": round(ev["seconds"], 1), "wall_seconds": round(meta["wall_seconds"], 1),
            "peak_mem_mb": round(meta["peak_mem_mb"]), "device": meta["device"], "commit": code,
            "command": shlex.join(cmd), "stored_floats": meta.get("storage_numel"),
            **({"learned_lr": round(meta["learned_lr"], 6)} if meta.get("learned_lr") else {}),
            **{k: meta[k] for k in ("bases_per_class", "n_hallucinators", "budget_floats") if k in meta},
            **job.extra, **_extra_fields(meta.get("extra_report")),
        })
    with open(results, "a") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return records[0]


def _extra_fields(extra: dict | None) -> dict:
    """A method's before/after numbers (DD's pretrained settings) as flat record fields:
    ``attack_success_after`` (mean, percent), ``attack_success_after_std`` ..."""
    out = {}
    for k, v in (extra or {}).items():
        if isinstance(v, dict) and "mean" in v:
            out[k], out[f"{k}_std"] = round(v["mean"], 2), round(v["std"], 2)
        elif not isinstance(v, dict):
            out[k] = v
    return out


def run_suite(jobs: list[Job], results: Path, runs: Path) -> None:
    results.parent.mkdir(parents=True, exist_ok=True)
    for job in jobs:
        if job.key in done_keys(results):
            print(f"skip {job.key}: already recorded in {results.name}", flush=True)
            continue
        r = run_job(job, runs, results)
        print(f"{job.key}: {r['acc_mean']:.2f} ± {r['acc_std']:.2f}%  ({r['seconds_per_iteration']} s/it, "
              f"wall {r['wall_seconds']} s)", flush=True)
