"""Kill a job with SIGKILL at random moments, resume it each time, and compare what it ends with
against an uninterrupted run of the same command.

    python benchmarks/killtest.py dm                 # 20 kills, digits, one record
    python benchmarks/killtest.py all --kills 20     # every target, one record each
    python benchmarks/killtest.py dc --kills 3 --no-record

Targets: each method (dd, dc, dsa, dm, mtt, haba, datm, frepo) as a small `datadistill distill` on
scikit-learn's digits, a checkpoint after every iteration (so that kills land inside checkpoint and
metrics writes too); `experts` (an expert buffer), `evaluate` (an evaluation grid of a set's models
kept in a work folder) and `study` (the ipc-curve study). The reference runs once, uninterrupted; the
killed copy is started, killed after a random delay drawn from the reference's own duration, started
again with its resume command, and so on until the kills are spent and a last start finishes. When a
start finishes before its kill, the job is complete: it is compared, and a new copy starts for the
kills left (each copy's final result is compared). Compared: every tensor of the final files bit for
bit, and the evaluation's per-model accuracies. Every process runs with one torch thread, the same
as the reference (the thread count changes floating-point reductions).

Each target writes one record to benchmarks/results/killtest.jsonl: kills, copies, how many were
identical, the seconds, the commit and the machine. A long run resumes: targets with a record for
this commit and kill count are skipped (``--again`` reruns them).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "killtest.jsonl"
CLI = [sys.executable, "-m", "datadistill.cli"]
EVAL = ["eval.preset=smoke", "eval.epochs=2", "eval.n_models=2", "eval.model=mlp"]
COMMON = ["--dataset", "digits", "--ipc", "1", "--no-progress", "checkpoint_every=1", *EVAL]
# per method: its flags for a run of a few seconds (an MLP where the method allows one: digits are 8x8)
METHODS: dict[str, list[str]] = {
    "dm": ["--iterations", "30", "method_config.model=convnet_w32", "method_config.batch_real=32"],
    "dc": ["--iterations", "6", "method_config.model=convnet_w32", "method_config.batch_real=32",
           "method_config.outer_loop=2", "method_config.inner_loop=2"],
    "dsa": ["--iterations", "6", "method_config.model=convnet_w32", "method_config.batch_real=32",
            "method_config.outer_loop=2", "method_config.inner_loop=2"],
    "dd": ["--iterations", "10", "--ipc", "2", "method_config.model=mlp", "method_config.batch_real=32",
           "method_config.steps=2", "method_config.epochs=1"],
    "mtt": ["--iterations", "10", "method_config.model=mlp", "method_config.syn_steps=3",
            "method_config.expert_epochs=1", "method_config.max_start_epoch=1", "zca=null"],
    "haba": ["--iterations", "10", "--ipc", "2", "method_config.model=mlp", "method_config.extractor=mlp",
             "method_config.syn_steps=2", "method_config.expert_epochs=1", "method_config.max_start_epoch=1",
             "method_config.dsa=false", "method_config.lr_img=0.1", "method_config.lr_hallucinator=0.1", "zca=null"],
    "datm": ["--iterations", "10", "method_config.model=mlp", "method_config.syn_steps=3",
             "method_config.expert_epochs=1", "method_config.max_start_epoch=1",
             "method_config.current_max_start_epoch=1", "zca=null"],
    "frepo": ["--iterations", "10", "method_config.model=convnet_w32", "method_config.batch_real=32"],
}
NEEDS_EXPERTS = ("mtt", "haba", "datm")
EXPERTS = ["experts", "--dataset", "digits", "--model", "mlp", "--experts", "3", "--epochs", "2", "--augment", "none",
           "--no-progress"]


@dataclass
class Target:
    """A job to kill: its first command and its resume command for a work folder (each a function of
    the folder), and what its result is (a function of the folder: a JSON-able dict of tensors' bytes
    digests and accuracies)."""

    name: str
    fresh: Callable[[Path], list[str]]
    resume: Callable[[Path], list[str]]
    result: Callable[[Path, str], dict]
    prepare: Callable[[Path], None] = field(default=lambda work: None)


def tensor_digests(f) -> dict[str, str]:
    """sha256 of each tensor's bytes in an open safetensors file, by name."""
    import hashlib

    return {k: hashlib.sha256(f.get_tensor(k).contiguous().view(-1).numpy().tobytes()).hexdigest()
            for k in sorted(f.keys())}


def run_folder_result(out: Path, stdout: str) -> dict:
    """The final set's tensors (sha256 of each tensor's bytes) and its final evaluation's accuracies."""
    from safetensors import safe_open

    with safe_open(str(out / "distilled.safetensors"), framework="pt") as f:
        tensors = tensor_digests(f)
        meta = json.loads((f.metadata() or {}).get("datadistill", "{}"))
    accs = {m: r.get("accuracies") for m, r in (meta.get("evaluation") or {}).items()}
    return {"tensors": tensors, "accuracies": accs}


def shards_result(out: Path, stdout: str) -> dict:
    """Each expert shard's tensors (sha256 of each tensor's bytes)."""
    from safetensors import safe_open

    digests = {}
    for p in sorted(out.glob("expert-*.safetensors")):
        with safe_open(str(p), framework="pt") as f:
            digests[p.name] = tensor_digests(f)
    return {"shards": digests}


def evaluate_result(out: Path, stdout: str) -> dict:
    reports = json.loads(stdout[stdout.index("{"):])
    return {m: r["accuracies"] for m, r in reports.items()}


def study_result(out: Path, stdout: str) -> dict:
    rows = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines() if x.strip()]
    return {"rows": [{k: v for k, v in r.items() if k not in ("seconds",)} for r in rows]}


def distill_target(method: str, experts: Path) -> Target:
    extra = [f"method_config.experts={experts}"] if method in NEEDS_EXPERTS else []
    argv = ["distill", "--method", method, *COMMON, *METHODS[method], *extra]

    def prepare(work: Path) -> None:
        if method in NEEDS_EXPERTS and not any(experts.glob("expert-*.safetensors")):
            subprocess.run([*CLI, *EXPERTS, "--out", str(experts)], check=True, cwd=ROOT, env=env(),
                           capture_output=True)

    return Target(method, lambda d: [*argv, "--out", str(d)], lambda d: [*argv, "--out", str(d), "--resume"],
                  run_folder_result, prepare)


def targets(work: Path) -> dict[str, Target]:
    experts = work / "experts"
    out = {m: distill_target(m, experts) for m in METHODS}
    out["experts"] = Target("experts", lambda d: [*EXPERTS, "--out", str(d)], lambda d: [*EXPERTS, "--out", str(d)],
                            shards_result)
    set_file = work / "set.safetensors"

    def make_set(_work: Path) -> None:
        if not set_file.is_file():
            subprocess.run([*CLI, "distill", "--method", "random", "--dataset", "digits", "--ipc", "2", "--no-progress",
                            *EVAL, "--out", str(work / "random")], check=True, cwd=ROOT, env=env(), capture_output=True)
            shutil.copy(work / "random" / "distilled.safetensors", set_file)

    grid = ["evaluate", str(set_file), "--models", "mlp,convnet_w32", "epochs=20", "n_models=3", "--json"]
    out["evaluate"] = Target("evaluate", lambda d: [*grid, "--work-dir", str(d)],
                             lambda d: [*grid, "--work-dir", str(d)], evaluate_result, make_set)
    study = ["study", "ipc-curve", "--dataset", "digits", "--ipcs", "1,2,5", "--protocol", "smoke", "epochs=10",
             "n_models=2", "--no-progress"]
    out["study"] = Target("study", lambda d: [*study, "--out", str(d)], lambda d: [*study, "--out", str(d)],
                          study_result)
    return out


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def start(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen([*CLI, *argv], cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def finish(argv: list[str]) -> str:
    p = subprocess.run([*CLI, *argv], cwd=ROOT, env=env(), capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(f"datadistill {' '.join(argv)} exited {p.returncode}:\n{p.stderr[-3000:]}")
    return p.stdout


def killtest(target: Target, work: Path, kills: int, seed: int = 0, log: Callable[[str], None] = print) -> dict:
    """``kills`` SIGKILLs of ``target`` at random moments, a resume after each; every copy's final
    result against the uninterrupted reference. Returns the record (without commit and machine)."""
    rng = random.Random(seed)
    target.prepare(work)
    ref_dir = work / f"{target.name}-reference"
    shutil.rmtree(ref_dir, ignore_errors=True)
    t0 = time.perf_counter()
    reference = target.result(ref_dir, finish(target.fresh(ref_dir)))
    wall = time.perf_counter() - t0
    done, copies, identical, starts, finished_early = 0, 0, 0, 0, 0
    t_start = time.perf_counter()
    while done < kills:
        copy = work / f"{target.name}-copy{copies}"
        shutil.rmtree(copy, ignore_errors=True)
        copies += 1
        argv = target.fresh(copy)
        while True:
            p = start(argv)
            t_p = time.perf_counter()
            starts += 1
            delay = rng.uniform(0.05 * wall, 0.6 * wall)
            try:
                p.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
                done += 1
                argv = target.resume(copy)
                if done < kills:
                    continue
                stdout = finish(argv)  # the last resume runs to the end
            else:
                stdout, err = p.communicate()
                if p.returncode:
                    raise RuntimeError(f"{target.name}: a resumed start failed ({p.returncode}):\n{err[-3000:]}")
                finished_early += 1
                if argv == target.fresh(copy):  # a whole run, uninterrupted: the machine is faster now
                    wall = min(wall, time.perf_counter() - t_p)
            break
        got = target.result(copy, stdout)
        same = got == reference
        identical += same
        log(f"{target.name}: copy {copies} after {done} kills in all: {'identical' if same else 'DIFFERENT'}")
        if not same:
            log(json.dumps({"reference": reference, "got": got})[:2000])
    return {"target": target.name, "kills": done, "copies": copies, "identical": identical, "starts": starts,
            "finished_before_their_kill": finished_early, "reference_seconds": round(wall, 1),
            "seconds": round(time.perf_counter() - t_start, 1), "seed": seed}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", help=f"one of: all, {', '.join([*METHODS, 'experts', 'evaluate', 'study'])}")
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, help="work folder (default: a temporary one)")
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--no-record", action="store_true", help="print the result only")
    p.add_argument("--again", action="store_true", help="rerun targets already recorded for this commit")
    a = p.parse_args(argv)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from run import commit, machine  # noqa: PLC0415

    from datadistill.fileio import append_jsonl, read_jsonl  # noqa: PLC0415

    work = a.work or Path(tempfile.mkdtemp(prefix="killtest-"))
    work.mkdir(parents=True, exist_ok=True)
    all_targets = targets(work.resolve())
    names = list(all_targets) if a.target == "all" else [a.target]
    unknown = [n for n in names if n not in all_targets]
    if unknown:
        print(f"error: unknown target {unknown[0]!r}; valid: all, {', '.join(all_targets)}", file=sys.stderr)
        return 2
    code, where = commit(), machine()
    recorded = {(r["target"], r["commit"], r["kills"]) for r in read_jsonl(a.results)} if not a.no_record else set()
    failed = 0
    for name in names:
        if (name, code, a.kills) in recorded and not a.again:
            print(f"skip {name}: recorded for commit {code}")
            continue
        rec = killtest(all_targets[name], work.resolve(), a.kills, a.seed)
        rec = {**rec, "commit": code, **where,
               "command": f"python benchmarks/killtest.py {name} --kills {a.kills} --seed {a.seed}"}
        failed += rec["identical"] != rec["copies"]
        print(json.dumps(rec))
        if not a.no_record:
            append_jsonl(a.results, rec)
    if a.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
