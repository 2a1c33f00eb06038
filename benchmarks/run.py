"""Run a benchmark suite, then compare each job's latest record with its expectation.

    python benchmarks/run.py SUITE [--only ID ...] [--results FILE] [--runs DIR]
    python benchmarks/run.py SUITE --check      # run nothing: the existing records vs the suite
    python benchmarks/run.py SUITE --list       # the jobs, their commands and expectations
    python benchmarks/run.py SUITE --only ID --rerun   # a recorded job again: a new record after the old

SUITE is a YAML file or the name of one in benchmarks/suites/ (``cpu``, ``cpu-ablations``,
``cpu-smoke``). Each job runs in its own process (a `datadistill` command); when it finishes, one
JSON line per evaluated model is appended to the job's records file in benchmarks/results/ (or to
``--results FILE``), with the command, the commit, the machine and its CPU capability, the accuracy
and the seconds. A job that already has a record is skipped, and an interrupted job resumes from its
run folder (``--runs``/ID, default benchmarks/runs/ID: a distillation's checkpoint, an evaluation's
finished models), so a suite continues where it stopped. ``--rerun`` runs the ``--only`` jobs again
from the start (their earlier run folders kept aside) and appends their new records. Exit status: 0
when every checked job meets its expectation, 1 when one regressed (its figure is below expected -
tolerance) or failed to run, 2 on bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from suites import (RELEASED_DIR, ROOT, Job, Suite, SuiteError, check, check_claims, job_rows,  # noqa: E402
                    latest_record, load_suite, read_records, results_path)

from datadistill.executor import thread_env  # noqa: E402
from datadistill.fileio import append_jsonl, atomic_write_text, read_jsonl  # noqa: E402
from datadistill.rundir import LockHeld, process_lock  # noqa: E402

CLI = [sys.executable, "-m", "datadistill.cli"]


def commit() -> str:
    """The checkout's commit; ``-dirty`` when code (anything but the records) differs from it."""
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                            ":!benchmarks/results", ":!docs/results.md", ":!docs/img"],
                           cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return (out.stdout.strip() or "unknown") + ("-dirty" if dirty else "")


def machine(threads: int | None = None) -> dict:
    """Where a job ran: the CPU (as distilled-set files name it, with ``threads`` torch threads when the
    jobs are given that many, else this process's), the capability ATen dispatches to and whether
    ConvNets ran the fused CPU kernel (`datadistill.kernels`; the jobs run with this process's
    environment)."""
    import torch

    from datadistill.device import device_name
    from datadistill.kernels import use_fused

    return {"device": device_name(torch.device("cpu"), threads),
            "capability": torch.backends.cpu.get_cpu_capability(),
            "kernels": "fused" if use_fused() else "eager"}


def repo_name(path: Path) -> str:
    """``path`` as records name it: relative to the repository when inside it, else absolute. A path
    through a link inside the checkout (``benchmarks/runs`` linked to a shared folder) keeps the name
    it has here, so that a job's command reads the same from every checkout."""
    plain = Path(os.path.abspath(path))
    if plain.is_relative_to(ROOT):
        return str(plain.relative_to(ROOT))
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def rerun_mark(workspace: Path) -> Path:
    """The mark beside a job's run folder or output while its ``--rerun`` has no record yet."""
    return workspace.with_name(workspace.name + ".rerun")


class Runner:
    def __init__(self, suite: Suite, runs: Path, results: Path | None, device: str | None = None,
                 threads: int | None = None):
        self.suite, self.runs, self.results, self.device = suite, Path(os.path.abspath(runs)), results, device
        self.threads = threads  # each job's torch threads (OMP_NUM_THREADS); None: the environment's
        self.code = commit()  # the code the jobs execute: taken before they start
        self.where = machine(threads)
        self.held: set[Path] = set()  # the job locks this process holds (`hold`)

    # -- one process per job ----------------------------------------------------------------------
    def lock_file(self, job: Job) -> Path:
        """The lock a job is run under: ``RUNS/.locks/RECORDS.ID.lock`` (its records file and id name
        it, as they name its records), shared by every `run.py` that uses these run folders."""
        return self.runs / ".locks" / f"{Path(job.results).stem}.{job.id}.lock"

    @contextlib.contextmanager
    def hold(self, job: Job, *, wait: bool = False):
        """Run ``job`` in this process only: two `run.py` started on one suite (two terminals, two
        queues) never run one job, or build one teacher or expert buffer, twice at once. Held by another
        process, it raises `LockHeld`, or with ``wait`` (a prerequisite this job cannot go without)
        says so and waits for it. A lock this process holds already is held again at no cost."""
        path = self.lock_file(job)
        if path in self.held:
            yield
            return
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(process_lock(path))
            except LockHeld as e:
                if not wait:
                    raise
                print(f"{job.id}: process {e.pid} on {e.host} is running it; waiting for it", flush=True)
                stack.enter_context(process_lock(path, wait=True))
            self.held.add(path)
            try:
                yield
            finally:
                self.held.discard(path)

    # -- commands ---------------------------------------------------------------------------------
    def args(self, job: Job) -> list[str]:
        return [a.replace("{runs}", repo_name(self.runs)) for a in job.args]

    def run_dir(self, job: Job) -> Path:
        return self.runs / job.id

    def command(self, job: Job) -> list[str]:
        """The job's `datadistill` command line (a parity job's: benchmarks/parity.py's), as its record
        names it."""
        if job.kind == "parity":
            return ["python", "benchmarks/parity.py", "--set", job.file, "--preset", job.preset, *self.args(job)]
        if job.kind == "distill":
            return ["datadistill", "distill", "--method", job.cli_method or job.method, "--dataset", job.dataset,
                    "--ipc", str(job.ipc), "--out", repo_name(self.run_dir(job)), *self.args(job)]
        if job.kind == "full":
            return ["datadistill", "evaluate", "--full", "--dataset", job.dataset, "--json", *self.args(job)]
        if job.kind == "experts":
            return ["datadistill", "experts", "--dataset", job.dataset, *self.args(job), "--no-progress"]
        if job.kind == "teacher":
            return ["datadistill", "teacher", "--dataset", job.dataset, *self.args(job), "--force"]
        if job.kind == "study":  # resumable by itself: a rerun trains only the jobs it lacks
            return ["datadistill", "study", job.study, "--dataset", job.dataset, *self.args(job), "--out",
                    repo_name(self.run_dir(job)), "--no-progress"]
        src = self.source(job, build=False)
        if job.kind == "score":
            return ["datadistill", "evaluate", repo_name(src), "--models", job.model, "--scores", "--full-accuracy",
                    f"{self.full_accuracy(job):g}", *self.args(job), "--json"]
        if job.kind == "evaluate":  # each model's result kept in the run folder: a stopped job resumes there
            return ["datadistill", "evaluate", repo_name(src), "--models", job.model, *self.args(job),
                    "--work-dir", repo_name(self.run_dir(job) / "models"), "--json"]
        return ["datadistill", "evaluate", repo_name(self.bases_file(job)), *self.args(job), "--json"]

    def execute(self, cmd: list[str], capture: bool = False) -> tuple[str, float]:
        print("$ " + shlex.join(cmd), flush=True)
        t = time.perf_counter()
        head = [sys.executable] if cmd[0] == "python" else CLI  # benchmarks/parity.py, else a datadistill command
        p = subprocess.run([*head, *cmd[1:]], cwd=ROOT, env=thread_env(self.threads), capture_output=capture,
                           text=True)
        if p.returncode:
            tail = (p.stderr or "").strip().splitlines()[-1:] if capture else []
            raise JobFailed(f"exit status {p.returncode}" + (f": {tail[0]}" if tail else ""))
        return p.stdout or "", time.perf_counter() - t

    # -- inputs of evaluate / bases jobs --------------------------------------------------------------
    def source(self, job: Job, build: bool = True) -> Path:
        """The distilled set ``job.of`` made: its run folder's file, else the released copy of it,
        else (``build``) the job is run to make it."""
        own = self.run_dir(self.suite.job(job.of)) / "distilled.safetensors"
        if own.is_file():
            return own
        released = released_file(job.of.split(":")[-1])
        if released is not None:
            return released
        if build:
            print(f"{job.id} needs the set of {job.of}: running it", flush=True)
            self.run_job(self.suite.job(job.of))
        return own

    def full_accuracy(self, job: Job) -> float:
        """The whole-data accuracy (%) a score job measures against: the latest record of its ``full`` job
        (run first when it has none)."""
        full = self.suite.job(job.full)
        rec = latest_record(full, self.results)
        if rec is None:
            print(f"{job.id} needs the whole-data reference {job.full}: running it", flush=True)
            rec = self.run_job(full)[0]
        return float(rec["acc_mean"])

    def bases_file(self, job: Job) -> Path:
        return self.runs / "haba-bases" / f"{job.of}.safetensors"

    # -- jobs ---------------------------------------------------------------------------------------
    def run_job(self, job: Job) -> list[dict]:
        self.prerequisites(job)
        cmd, run, capture = self.invocation(job)
        if job.kind == "teacher" and (seconds := self.trained_teacher(job)) is not None:
            print(f"{job.id}: {repo_name(self.output(job))} is a finished teacher of this job's settings: "
                  "recorded from it, not trained again", flush=True)
            return self.record(job, cmd, "", seconds)
        out, wall = self.execute(run, capture)
        return self.record(job, cmd, out, wall)

    def trained_teacher(self, job: Job) -> float | None:
        """The training seconds of the teacher file a teacher job without a record finds at its ``--out``
        when the file was trained with the job's own settings (dataset, model, epochs, lr, batch, seed,
        augmentation: another checkout's records, a records file lost), else None. Such a teacher is hours
        of CPU that the job's ``--force`` would train again; `--rerun` moves the file aside first and so
        trains anew. A teacher taken from experts costs seconds and is always made again."""
        from datadistill.cli import teacher as teacher_cli
        from datadistill.models import MODELS
        from datadistill.registry import UnknownNameError
        from datadistill.teachers import TeacherError, load_teacher

        path = self.output(job)
        if not path.is_file():
            return None
        parser = argparse.ArgumentParser()
        teacher_cli.add_parsers(parser.add_subparsers(dest="command"))
        cmd = self.command(job)
        try:  # a command or file that does not parse: the job's own command will say what is wrong
            a = parser.parse_args(cmd[cmd.index("teacher"):])
            model = MODELS.canonical(a.model)
            t = load_teacher(path)
        except (SystemExit, ValueError, UnknownNameError, TeacherError):
            return None
        src = t.meta.get("source") or {}
        want = {"kind": "trained", "epochs": a.epochs, "lr": a.lr, "batch_size": a.batch_size, "seed": a.seed,
                "augment": "none" if a.no_augment else "dsa"}
        if a.from_experts or t.spec.name != a.dataset or t.model != model or any(src.get(k) != v for k, v in want.items()):
            return None
        return float(src.get("seconds") or 0.0)

    def prerequisites(self, job: Job) -> None:
        if job.needs:
            self.ensure(self.suite.job(job.needs))
        if job.kind in ("evaluate", "bases", "score"):
            self.source(job)
        if job.kind == "score":
            self.full_accuracy(job)

    def invocation(self, job: Job) -> tuple[list[str], list[str], bool]:
        """(the command as the record names it, the command that runs, whether its output is read)."""
        cmd = self.command(job)
        if job.kind == "distill":
            resume = ["--resume"] if (self.run_dir(job) / "config.yaml").is_file() else []
            run = [*cmd, *resume, "--no-progress"]
        elif job.kind == "bases":
            write_bases(self.source(job), self.bases_file(job))
            run = cmd
        else:
            run = cmd
        if self.device:
            run = [*run, "--device", self.device]
        return cmd, run, job.kind in ("full", "evaluate", "bases", "score")

    def record(self, job: Job, cmd: list[str], out: str, wall: float) -> list[dict]:
        """The job's records from its output, appended to its records file at once (a parity job's
        script appends its own record, both sides' models in it, and that is returned)."""
        if job.kind == "parity":
            return [latest_record(job, self.results)]
        records = getattr(self, f"_records_{job.kind}")(job, cmd, out, wall)
        common = {"job": job.id, "suite": job.suite or self.suite.name, "commit": self.code, **self.where}
        records = [{**r, **common, **({"device": r["device"]} if r.get("device") else {})} for r in records]
        path = results_path(job, self.results)
        for r in records:  # one whole line per write, under the file's lock (`fileio.append_jsonl`)
            append_jsonl(path, r)
        return records

    def ensure(self, job: Job) -> None:
        """Make a prerequisite (experts, a teacher) exist, its own prerequisites first. A job without a
        record runs and is recorded. Otherwise experts resume (a finished buffer returns at once) and a
        teacher file that exists is kept; a teacher built anew (its run folder was lost, another machine)
        is recorded again when its sha256 differs from its latest record's, so that the record names the
        teacher the later jobs use; experts likewise (their digest: `experts_digest`; a record without one
        counts as another). Another process building it is waited for (`hold`)."""
        with self.hold(job, wait=True):
            self._ensure(job)

    def _ensure(self, job: Job) -> None:
        rec = latest_record(job, self.results)
        if rec is None:
            self.run_job(job)
            return
        self.prerequisites(job)
        if job.kind == "teacher" and self.output(job).is_file():
            return
        cmd, run, capture = self.invocation(job)
        out, wall = self.execute(run, capture)
        if job.kind in ("teacher", "experts"):
            built = getattr(self, f"_records_{job.kind}")(job, cmd, out, wall)[0]
            if built["sha256"] != rec.get("sha256"):
                was = str(rec["sha256"])[:8] if rec.get("sha256") else "no digest"
                if job.kind == "teacher":
                    what = (f"the teacher built now (sha256 {built['sha256'][:8]}, {built['test_accuracy']}%) "
                            f"is not the recorded one")
                else:
                    what = f"the experts here (sha256 {built['sha256'][:8]}) are not the recorded ones"
                print(f"{job.id}: {what} ({was}): recorded again", flush=True)
                self.record(job, cmd, out, wall)

    def output(self, job: Job) -> Path:
        """The file or folder an experts or teacher job writes (its ``--out``)."""
        args = self.args(job)
        return ROOT / args[args.index("--out") + 1]

    # -- running a recorded job again ---------------------------------------------------------------
    def workspace(self, job: Job) -> Path | None:
        """What a job resumes from or writes: its run folder (distill, evaluate, study), its ``--out``
        (experts, teacher); None for the jobs that keep nothing (full, score, bases, parity)."""
        if job.kind in ("distill", "evaluate", "study"):
            return self.run_dir(job)
        if job.kind in ("experts", "teacher"):
            return self.output(job)
        return None

    def start_rerun(self, job: Job) -> None:
        """Make a recorded ``job`` run again from the start (``--rerun``): its earlier run folder or
        output is moved aside to ``NAME.previous-N`` (never deleted), and a mark beside it,
        ``NAME.rerun``, holds the job's record count. A rerun stopped before its record resumes where it
        stopped (the mark still holds the count); one that was recorded starts afresh."""
        ws = self.workspace(job)
        if ws is None:
            return
        count = str(len(job_rows(job, self.results)))
        mark = rerun_mark(ws)
        if mark.is_file() and mark.read_text().strip() == count:
            print(f"{job.id}: its rerun resumes in {repo_name(ws)}", flush=True)
            return
        if ws.exists():
            n = 1
            while ws.with_name(f"{ws.stem}.previous-{n}{ws.suffix}").exists():
                n += 1
            aside = ws.with_name(f"{ws.stem}.previous-{n}{ws.suffix}")
            ws.rename(aside)
            print(f"{job.id}: runs again; its earlier {'file' if aside.is_file() else 'run folder'} is kept as "
                  f"{repo_name(aside)}", flush=True)
        ws.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(mark, count + "\n")

    def end_rerun(self, job: Job) -> None:
        """The rerun's record is written: its mark goes."""
        ws = self.workspace(job)
        if ws is not None:
            rerun_mark(ws).unlink(missing_ok=True)

    # -- many jobs at once ------------------------------------------------------------------------
    def missing_inputs(self, job: Job) -> list[Job]:
        """The jobs that must run before ``job``: its experts without a record, the job whose set it
        evaluates when that set is nowhere yet."""
        out = []
        if job.needs and latest_record(self.suite.job(job.needs), self.results) is None:
            out.append(self.suite.job(job.needs))
        if job.kind in ("evaluate", "bases", "score") and not self.source(job, build=False).is_file():
            out.append(self.suite.job(job.of))
        if job.kind == "score" and latest_record(self.suite.job(job.full), self.results) is None:
            out.append(self.suite.job(job.full))
        return out

    def run_grid(self, jobs: list[Job], executor) -> list[str]:
        """Run ``jobs`` (and the inputs they miss) through ``executor``, one task per job, in waves:
        a job starts once its inputs exist. Each record is appended as its job finishes. Returns the
        ids of the jobs that failed."""
        from datadistill.executor import ExecutorError, Task, TaskError, run_cli

        waves, seen, todo = [], set(), list(jobs)
        while todo:  # from the requested jobs back to what they need
            waves.insert(0, todo)
            seen.update(j.id for j in todo)
            todo = list({p.id: p for j in todo for p in self.missing_inputs(j) if p.id not in seen}.values())
        failed: list[str] = []
        for wave in waves:
            wave = [j for j in wave if j.id not in failed and not any(p.id in failed for p in self.missing_inputs(j))]
            invocations = {j.id: self.invocation(j) for j in wave}
            tasks = [Task(j.id, run_cli, (invocations[j.id][1][1:], str(ROOT), executor.threads)) for j in wave]
            by_id = {j.id: j for j in wave}

            def done(task, result):
                job = by_id[task.key]
                if job in jobs or latest_record(job, self.results) is None:
                    r = self.record(job, invocations[job.id][0], result["stdout"], result["seconds"])[0]
                    self.end_rerun(job)
                    if "acc_mean" in r:
                        print(f"{job.id}: {r['acc_mean']:.2f} ± {r['acc_std']:.2f}%", flush=True)

            try:
                executor.run(tasks, desc=f"{self.suite.name} jobs", on_done=done)
            except (ExecutorError, TaskError) as e:  # the other jobs went on; a bug's traceback is in ``e``
                print(f"FAILED: {e}", file=sys.stderr, flush=True)
                failed += [j.id for j in wave if latest_record(j, self.results) is None]
        return [j.id for j in jobs if j.id in failed]

    def _records_distill(self, job: Job, cmd: list[str], out_text: str, wall: float) -> list[dict]:
        from datadistill.synset import read_meta

        out = self.run_dir(job)
        meta = read_meta(out / "distilled.safetensors")
        if "--iterations" in job.args:
            want = int(job.args[job.args.index("--iterations") + 1])
            if meta["iterations"] != want:
                raise JobFailed(f"{out} holds a run of {meta['iterations']} iterations, not the job's {want}: "
                                "move it away or choose another --runs")
        records = []
        for model, ev in meta["evaluation"].items():
            records.append({
                "method": job.method, "dataset": job.dataset, "ipc": job.ipc, "setting": job.setting, "model": model,
                "protocol": ev["protocol"]["name"], "epochs": ev["protocol"]["epochs"], **_steps(ev["protocol"]),
                "augment": ev["protocol"]["augment"], "n_models": ev["n_models"],
                "acc_mean": round(ev["acc_mean"], 2), "acc_std": round(ev["acc_std"], 2),
                "accuracies": [round(100 * a, 2) for a in ev["accuracies"]],
                "iterations": meta["iterations"], "seconds_per_iteration": round(meta["seconds_per_iteration"], 3),
                "eval_seconds": round(ev["seconds"], 1), "wall_seconds": round(meta["wall_seconds"], 1),
                "job_seconds": round(wall, 1), "peak_mem_mb": round(meta["peak_mem_mb"]), "device": meta["device"],
                "command": shlex.join(cmd), "stored_floats": meta.get("storage_numel"),
                **({"learned_lr": round(meta["learned_lr"], 6)} if meta.get("learned_lr") else {}),
                **{k: meta[k] for k in ("bases_per_class", "n_hallucinators", "budget_floats", "storage_ratio") if k in meta},
                **job.extra, **_flat(meta.get("extra_report")),
                **({"curve": curve} if (curve := eval_curve(out / "metrics.jsonl")) else {}),
            })
        return records

    def _records_full(self, job: Job, cmd: list[str], out: str, wall: float) -> list[dict]:
        reports = json.loads(out[out.index("{"):])
        return [{
            "method": "full", "dataset": job.dataset, "ipc": 0, "setting": job.setting, "model": model,
            "protocol": ev["protocol"]["name"], "epochs": ev["protocol"]["epochs"], **_steps(ev["protocol"]),
            "augment": ev["protocol"]["augment"],
            "n_models": ev["n_models"], "acc_mean": round(ev["acc_mean"], 2), "acc_std": round(ev["acc_std"], 2),
            "accuracies": [round(100 * a, 2) for a in ev["accuracies"]], "iterations": 0,
            "seconds_per_iteration": 0.0, "eval_seconds": round(ev["seconds"], 1), "wall_seconds": round(wall, 1),
            "peak_mem_mb": None, "command": shlex.join(cmd),
        } for model, ev in reports.items()]

    def _records_experts(self, job: Job, cmd: list[str], out: str, wall: float) -> list[dict]:
        from datadistill.experts import ExpertBuffer

        s = ExpertBuffer.open(self.output(job)).summary()
        return [{"what": "experts", "dataset": job.dataset, "model": "convnet", "n_experts": s["finished"],
                 "sha256": experts_digest(self.output(job)),
                 "epochs": s["epochs"], "train_seconds_total": s["total_seconds"],
                 "seconds_per_expert_epoch": round(s["total_seconds"] / (s["finished"] * s["epochs"]), 1),
                 "mean_final_test_acc": s["mean_final_test_acc"], "wall_seconds_this_call": round(wall, 1),
                 "device": s["experts"][0].get("device"), "command": shlex.join(cmd)}]

    def _records_evaluate(self, job: Job, cmd: list[str], out: str, wall: float) -> list[dict]:
        src = self.source(job, build=False)
        rms, n = input_rms(src)
        rep = json.loads(out[out.index("{"):])[job.model]
        proto = rep.get("protocol") or {}
        return [{"source": repo_name(src), "model": job.model, "protocol": proto.get("name"),
                 "epochs": proto.get("epochs"), **_steps(proto), "augment": proto.get("augment"),
                 "acc_mean": rep["acc_mean"], "acc_std": rep["acc_std"],
                 "accuracies": rep["accuracies"], "lr": rep["lr"], "n_models": rep["n_models"], "input_rms": rms,
                 "n_images": n, "overrides": [], "eval_seconds": round(wall, 1), "wall_seconds": round(wall, 1),
                 "command": shlex.join(cmd)}]

    def _records_score(self, job: Job, cmd: list[str], out: str, wall: float) -> list[dict]:
        """One record: the set's accuracy (``acc_mean``) with its labels, DD-Ranking's scores, and the
        distillation's own cost from the set's file (seconds per iteration, wall time)."""
        from datadistill.synset import read_meta

        src = self.source(job, build=False)
        sc = json.loads(out[out.index("{"):])[job.model]
        rep = sc["reports"]["set"]
        proto, meta = rep.get("protocol") or {}, read_meta(src)
        labels = rep.get("labels") or {"labels": "hard", "label_loss": "ce"}
        teacher = labels.get("teacher") or {}
        return [{"source": repo_name(src), "method": meta.get("method"), "dataset": meta["dataset"]["name"],
                 "ipc": meta.get("ipc"), "model": job.model, "protocol": proto.get("name"),
                 "epochs": proto.get("epochs"), **_steps(proto), "augment": proto.get("augment"), "n_models": rep["n_models"],
                 "acc_mean": rep["acc_mean"], "acc_std": rep["acc_std"], "accuracies": rep["accuracies"],
                 "labels": labels.get("labels"), "label_loss": labels.get("label_loss"),
                 "label_temperature": labels.get("label_temperature"),
                 "teacher": {k: teacher.get(k) for k in ("path", "sha256", "test_accuracy")} if teacher else None,
                 **{k: sc[k] for k in ("random", "hard", "full", "ior", "hlr", "lrs", "random_labels")},
                 "random_std": sc["reports"]["random"]["acc_std"], "hard_std": sc["reports"]["hard"]["acc_std"],
                 "iterations": meta.get("iterations"), "seconds_per_iteration": meta.get("seconds_per_iteration"),
                 "distill_wall_seconds": meta.get("wall_seconds"), "eval_seconds": round(wall, 1),
                 "wall_seconds": round(wall, 1), "command": shlex.join(cmd), **job.extra}]

    def _records_study(self, job: Job, cmd: list[str], out: str, wall: float) -> list[dict]:
        """One record: the study's summary (``summary.json``) and its headline figures (`Study.metrics`),
        with its command."""
        from datadistill.studies import get_study

        summary = json.loads((self.run_dir(job) / "summary.json").read_text())
        rows = read_records(self.run_dir(job) / "records.jsonl")
        trained = sorted({r["commit"] for r in rows if r.get("commit")})  # the code that trained the networks
        return [{"what": "app", **summary, **get_study(job.study).metrics(summary), "trained_at": trained,
                 "wall_seconds_this_call": round(wall, 1), "command": shlex.join(cmd)}]

    def _records_teacher(self, job: Job, cmd: list[str], out: str, wall: float) -> list[dict]:
        from datadistill.teachers import load_teacher

        t = load_teacher(self.output(job))
        return [{"what": "teacher", "dataset": job.dataset, "model": t.model, "path": repo_name(t.path),
                 "sha256": t.sha256, "test_accuracy": t.meta.get("test_accuracy"), "source": t.meta.get("source"),
                 "wall_seconds": round(wall, 1), "command": shlex.join(cmd)}]

    def _records_bases(self, job: Job, cmd: list[str], out: str, wall: float) -> list[dict]:
        from datadistill.synset import load_synset

        src = self.source(job, build=False)
        n_images = len(load_synset(self.bases_file(job)).synset)
        rep = json.loads(out[out.index("{"):])["convnet"]
        return [{"source": repo_name(src), "variant": "bases", "acc_mean": rep["acc_mean"], "acc_std": rep["acc_std"],
                 "accuracies": rep["accuracies"], "lr": rep["lr"], "n_images": n_images,
                 "eval_seconds": round(wall, 1), "wall_seconds": round(wall, 1), "command": shlex.join(cmd)}]


class JobFailed(RuntimeError):
    pass


def _steps(protocol: dict) -> dict:
    """``{"steps": N}`` for a protocol that trains N optimizer steps (FRePo's, whose ``epochs`` is unused),
    else nothing: a record's ``epochs`` alone would name a length that was not trained."""
    return {"steps": protocol["steps"]} if protocol.get("steps") else {}


def eval_curve(metrics: Path) -> list[list]:
    """A distillation's accuracy curve (``--eval-every``): ``[iteration, acc_mean, n_models]`` of each
    evaluation during the run, from its ``metrics.jsonl`` (the final one is the record's own figure).
    Empty without a file or such rows."""
    try:
        rows = read_jsonl(metrics)  # a last line cut by a kill is dropped; the rows before it stand
    except ValueError:  # a damaged file: the record goes without its curve
        return []
    return [[row["iteration"], round(ev["acc_mean"], 2), ev.get("n_models", 1)] for row in rows
            if isinstance(row, dict) and not row.get("final") and isinstance(ev := row.get("eval"), dict)
            and "acc_mean" in ev]


def _flat(extra: dict | None) -> dict:
    """A method's before/after numbers (DD's pretrained settings) as flat record fields:
    ``attack_success_after`` (mean, percent), ``attack_success_after_std`` ..."""
    out = {}
    for k, v in (extra or {}).items():
        if isinstance(v, dict) and "mean" in v:
            out[k], out[f"{k}_std"] = round(v["mean"], 2), round(v["std"], 2)
        elif not isinstance(v, dict):
            out[k] = v
    return out


def experts_digest(folder: Path) -> str:
    """sha256 of an experts folder's trajectories: every tensor of every ``expert-*.safetensors``, by
    name, in order (not the files' bytes: their metadata holds each expert's training seconds), so the
    same trajectories trained again give the same digest and other ones another."""
    import hashlib

    import torch
    from safetensors import safe_open

    h = hashlib.sha256()
    for path in sorted(folder.glob("expert-*.safetensors")):
        with safe_open(str(path), "pt") as f:
            for key in sorted(f.keys()):
                t = f.get_tensor(key).contiguous().reshape(-1)
                h.update(f"{path.name}/{key}:{t.dtype}:{tuple(t.shape)}".encode())
                h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def released_file(job_id: str) -> Path | None:
    """The released copy of ``job_id``'s distilled set (benchmarks/released/index.json), if any."""
    index = RELEASED_DIR / "index.json"
    if not index.is_file():
        return None
    for entry in json.loads(index.read_text()):
        if entry["job"] == job_id and (ROOT / entry["file"]).is_file():
            return ROOT / entry["file"]
    return None


def input_rms(path: Path) -> tuple[float, int]:
    """RMS of the set's materialized training examples (for HaBa every hallucination of every base),
    in the normalized space where real data has an RMS near 1, and how many examples there are."""
    from datadistill.synset import load_synset

    x = load_synset(path).synset.materialize()[0]
    return round(float(x.detach().float().pow(2).mean().sqrt()), 3), int(x.shape[0])


def write_bases(src: Path, dst: Path) -> Path:
    """The bases of the HaBa file ``src`` as a plain image set (same labels, same learned step size)."""
    from datadistill.synset import load_synset
    from datadistill.synset.io import save_synset
    from datadistill.synset.pixel import PixelSet

    f = load_synset(src)
    s = f.synset
    if not hasattr(s, "bases"):
        raise JobFailed(f"{src} is not a factorized (HaBa) set: it has no bases")
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_synset(dst, PixelSet(s.bases.detach(), s.labels, s.num_classes, lr=s.learned_lr()), f.spec,
                zca=f.zca, method="haba-bases", source=str(src))
    return dst


# the figure an expectation adopted from a record checks, by job kind (the others: ``acc_mean``)
ADOPTED_METRIC = {"experts": "mean_final_test_acc", "teacher": "test_accuracy"}


def adopt(suite: Suite, jobs: list[Job], override: Path | None = None) -> int:
    """Write into the suite file, for each job with a record but no expectation, its latest record
    as the expectation (source: the record's file, line and commit; experts and teachers: their
    networks' test accuracy, `ADOPTED_METRIC`). Only jobs written as one-line
    flow mappings (``  - {"id": ...}``) can be rewritten; others are an error naming them."""
    lines, n = suite.path.read_text().splitlines(), 0
    for job in jobs:
        if job.expected is not None:
            continue
        path = results_path(job, override)
        found = [(k, r) for k, r in enumerate(read_records(path), 1) if r.get("job") == job.id
                 and (not job.model or r.get("model") == job.model)]
        metric = ADOPTED_METRIC.get(job.kind, "acc_mean")
        if not found or metric not in found[-1][1]:
            continue
        line_no, rec = found[-1]
        at = [i for i, t in enumerate(lines) if t.lstrip().startswith("- {") and f'"id": "{job.id}"' in t]
        if not at:
            raise SuiteError(f"{suite.path.name}: job {job.id} is not a one-line mapping; add its expectation by hand")
        raw = json.loads(lines[at[0]].split("- ", 1)[1])
        models = rec.get("n_models") or 1
        raw["expected"] = {**({"metric": metric} if metric != "acc_mean" else {}), "value": round(rec[metric], 2),
                           "tolerance": round(max(1.0, 3 * rec.get("acc_std", 0.0) / models ** 0.5), 2),
                           "source": f"our record benchmarks/results/{path.name}:{line_no} (commit {rec.get('commit', '?')})"}
        lines[at[0]] = lines[at[0]].split("- ", 1)[0] + "- " + json.dumps(raw)
        n += 1
    if n:
        tmp = suite.path.with_suffix(".yaml.tmp")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(suite.path)  # atomic: a suite file is never half written
    return n


def recorded(job: Job, a: argparse.Namespace, when: str = "") -> bool:
    """Whether ``job`` is to be skipped for its record (not with ``--rerun``); says so. ``when``: after
    "recorded in FILE", e.g. " meanwhile" (another process recorded it while this one waited)."""
    if a.rerun or latest_record(job, a.results) is None:
        return False
    print(f"skip {job.id}: recorded in {results_path(job, a.results).name}{when}", flush=True)
    return True


def skip_held(job: Job, e: LockHeld) -> None:
    print(f"skip {job.id}: process {e.pid} on {e.host} is running it", flush=True)


def run_one(runner: Runner, job: Job, a: argparse.Namespace) -> dict | None:
    """One job under its lock: its first record, or None when another process recorded it while this
    one waited to start it."""
    if recorded(job, a, " meanwhile"):
        return None
    if a.rerun:
        runner.start_rerun(job)
    r = runner.run_job(job)[0]
    if a.rerun:
        runner.end_rerun(job)
    return r


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("suite", help="a suite file, or the name of one in benchmarks/suites/")
    p.add_argument("--only", nargs="+", action="extend", metavar="ID", help="these jobs only (ids, or comma lists)")
    p.add_argument("--results", type=Path, help="read and append every record here instead of the jobs' own files")
    p.add_argument("--runs", type=Path, default=ROOT / "benchmarks" / "runs", help="run folders (default %(default)s)")
    p.add_argument("--executor", choices=["serial", "process", "ray"],
                   help="run the jobs as tasks of this executor, one task per job (default: one after another here, "
                        "with their output on the console)")
    p.add_argument("--workers", type=int, help="parallel jobs (process, local ray; default: CPUs / --threads)")
    p.add_argument("--threads", type=int, help="torch threads per job (default: 1 with --executor, else the "
                                                 "environment's OMP_NUM_THREADS or torch's default)")
    p.add_argument("--ray-address", help="a running Ray cluster: auto or the head's host:port (default: a local one)")
    p.add_argument("--device", help="appended to every job's command as --device (e.g. cuda on GPU nodes)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="run nothing; compare the records with the expectations")
    mode.add_argument("--list", action="store_true", help="print the jobs, their commands and expectations")
    p.add_argument("--rerun", action="store_true",
                   help="run the --only jobs again although recorded: a new record is appended after the old ones "
                        "(tables show the latest, or pool the reruns of one command); each job's earlier run "
                        "folder or output is kept as NAME.previous-N, and a stopped rerun resumes")
    mode.add_argument("--adopt", action="store_true",
                      help="run nothing; give each recorded job without an expectation its record as expectation "
                           "(tolerance max(1, 3 std / sqrt(models)); suites whose jobs are one-line mappings)")
    a = p.parse_args(argv)
    if a.threads is not None and a.threads < 1:
        p.error(f"--threads must be at least 1, got {a.threads}")
    if a.rerun and (not a.only or a.check or a.list or a.adopt):
        p.error("--rerun runs the jobs named with --only again (and cannot go with --check, --list or --adopt)")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    try:
        suite = load_suite(a.suite)
        jobs = suite.select(a.only)
        if a.adopt:
            print(f"{suite.name}: {adopt(suite, jobs, a.results)} expectation(s) adopted from records")
            return 0
        if a.list:
            runner = Runner(suite, a.runs, a.results)
            for job in jobs:
                e = job.expected
                print(f"{job.id}\n  $ {shlex.join(runner.command(job))}\n  expected: "
                      + (f"{e.metric} {e.value:g} - {e.tolerance:g} ({e.source})" if e else
                         "both evaluators within two combined standard errors" if job.kind == "parity" else "-"))
            return 0
        failed = []
        if not a.check and a.executor:
            from datadistill.executor import ExecutorError, make_executor

            runner = Runner(suite, a.runs, a.results, a.device)
            with contextlib.ExitStack() as held:  # each job to run, held for the whole grid (`Runner.hold`)
                todo = []
                for job in jobs:
                    if recorded(job, a):
                        continue
                    try:
                        held.enter_context(runner.hold(job))
                    except LockHeld as e:
                        skip_held(job, e)
                        continue
                    if recorded(job, a, " meanwhile"):
                        continue
                    if a.rerun:
                        runner.start_rerun(job)
                    todo.append(job)
                try:
                    with make_executor(a.executor, workers=a.workers, threads=a.threads, address=a.ray_address,
                                       device=a.device or "cpu") as ex:
                        failed = runner.run_grid(todo, ex)
                except ExecutorError as e:
                    print(f"error: {e}", file=sys.stderr)
                    return 2
        elif not a.check:
            runner = Runner(suite, a.runs, a.results, a.device, a.threads)
            for job in jobs:
                if recorded(job, a):
                    continue
                try:
                    with runner.hold(job):
                        r = run_one(runner, job, a)
                except LockHeld as e:
                    skip_held(job, e)
                    continue
                except (JobFailed, subprocess.CalledProcessError, OSError, KeyError, ValueError) as e:
                    print(f"FAILED {job.id}: {e}", file=sys.stderr, flush=True)
                    failed.append(job.id)
                    continue
                if r and "acc_mean" in r:
                    print(f"{job.id}: {r['acc_mean']:.2f} ± {r['acc_std']:.2f}%", flush=True)
    except SuiteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    verdicts = check(jobs, a.results)
    for v in verdicts:
        print(v.line())
    selected = {j.id for j in jobs}
    claims = [c for c in check_claims(suite, a.results) if c.claim.job is None or c.claim.job in selected]
    for c in claims:  # the papers' figures beside ours: they inform, they do not fail the check
        print(c.line())
    bad = [v for v in verdicts if v.status in ("regression", "no figure")]
    counts = {s: sum(v.status == s for v in verdicts) for s in dict.fromkeys(v.status for v in verdicts)}
    counts.setdefault("not run", 0)  # always said, 0 included
    print(f"{suite.name}: " + ", ".join(f"{n} {s}" for s, n in counts.items())
          + (f", {len(claims)} claims ({sum(c.ours is not None for c in claims)} measured)" if claims else "")
          + (f", {len(failed)} failed to run" if failed else ""))
    if bad or failed:
        print(f"REGRESSION: {', '.join(v.job.id for v in bad)}" if bad else f"FAILED: {', '.join(failed)}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
