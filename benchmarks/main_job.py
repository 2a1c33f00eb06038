"""Time the README's two commands, `make distill` (the main job) and `make test`, on a fresh clone.

    python benchmarks/main_job.py [--what distill|test] [--avx2] [--keep] [--dir DIR]
        [--results FILE] [--smoke]

The checkout's HEAD is cloned into a new temporary folder (``--dir`` to choose it; removed after the
run unless ``--keep``): uncommitted changes are not timed, and the record names HEAD's commit. Then,
in the clone, each phase is timed on its own:

- **set-up**: ``make venv``. With the dependency cache (``~/.cache/datadistill/venv-HASH``) present
  this is the light ``.venv`` and the editable install; the record says whether the cache was there,
  and whether the fused kernels' build for the path was cached (``kernel_cache``; else the first
  model builds it, about half a minute, inside the distill phase).
- then the recipe of the target itself (``distill`` or ``test``), as ``make -n TARGET`` prints it
  once the set-up is done, one line at a time, each line timed. The commands are the Makefile's
  own, not a copy of them, so the timing follows the Makefile when it changes. For ``distill``:
  **data** (``datadistill data prepare mnist``; the record says whether MNIST was already
  prepared), then the ``datadistill distill`` command, split with its run folder into
  **iterations** (the ``seconds`` of the last iteration in ``metrics.jsonl``: the distillation
  steps alone), **evaluation** (the final evaluation's ``seconds`` in ``metrics.jsonl``: training and
  testing the 3 ConvNets) and the rest of the command (start-up, loading MNIST, writing the set, its
  grid and plots), then the report (``cat report.md``). For ``test``: the test suite, then the
  numeric tests on the other CPU path, with pytest's counts.

The total is one wall clock from the start of ``make venv`` to the end of the target's last
command. Running the recipe lines one by one costs make's own start-up once more (a fraction of a
second), which the total includes.

``--avx2`` forces PyTorch's AVX2 path for every phase (``ATEN_CPU_CAPABILITY=avx2
ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2``); those variables are recorded, with the CPU
capability the clone's PyTorch then dispatches to. Whether the machine was otherwise idle is
recorded two ways: the load average before the start, and the CPU seconds that other processes
used during the run (``/proc/stat``'s busy time minus this run's own children).

Appends one JSON line per run to benchmarks/results/main_job.jsonl (or ``--results``), also when a
command fails (``ok: false``, exit status 1). ``--smoke`` runs the same phases at a toy size (with
``OUT=runs/smoke``, the distill command gets `SMOKE_DISTILL` appended: 2 DM iterations on digits,
one ConvNet trained for 5 epochs; each pytest line gets ``-k`` one quick test), in a couple of
minutes, and records to benchmarks/runs/main_job-smoke.jsonl unless ``--results``: it checks this
script, it measures nothing worth quoting.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "main_job.jsonl"
SMOKE_RESULTS = ROOT / "benchmarks" / "runs" / "main_job-smoke.jsonl"
AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
CAPABILITY_ENV = tuple(AVX2)
OUT = "runs/quickstart"
SMOKE_OUT = "runs/smoke"
SMOKE_DISTILL = ["dataset=digits", "ipc=1", "iterations=2", "method_config.batch_real=32", "eval.preset=smoke",
                 "eval.n_models=1", "eval.epochs=5"]
# one quick test of each run of `make test` (the second runs the numeric tests only)
SMOKE_TEST = ["-k", "'test_registry_aliases_duplicates_and_close_matches or test_crop_with_zero_shift_is_identity'"]
IDLE_LOAD = 0.3  # 1-minute load average below which the machine counts as idle before the start
# the snippet run with the clone's Python: the machine as benchmarks/run.py's machine() names it
# what the clone's environment runs on; and whether the fused kernels' build for this path was cached
# (a first use builds it, about half a minute, once per machine and path, like the dependency cache)
MACHINE = ("import json, platform, torch; from datadistill.device import device_name; "
           "from datadistill.kernels import build_dir; "
           "print(json.dumps({'device': device_name(torch.device('cpu')), "
           "'capability': torch.backends.cpu.get_cpu_capability(), 'torch': torch.__version__, "
           "'python': platform.python_version(), "
           "'kernel_cache': 'present' if any(build_dir().glob('*.so')) else 'absent'}))")


class MainJobError(RuntimeError):
    """The clone or its Makefile is not what this script expects; the message says what."""


def run_logged(cmd: str | list[str], cwd: Path, env: dict[str, str], log) -> tuple[int, float, str]:
    """Run ``cmd`` (a shell line or an argument list), echo its output and append it to ``log``;
    returns its exit status, its wall seconds and its output."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=cwd, env=env, shell=isinstance(cmd, str), executable="/bin/bash"
                         if isinstance(cmd, str) else None, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    chunks = []
    for chunk in iter(lambda: p.stdout.read1(1 << 16), b""):
        sys.stdout.buffer.write(chunk)
        sys.stdout.flush()
        log.write(chunk)
        chunks.append(chunk)
    rc = p.wait()
    return rc, time.perf_counter() - t, b"".join(chunks).decode(errors="replace")


def make_var(clone: Path, env: dict[str, str], name: str) -> str:
    """The value of a Makefile variable, as make computes it in the clone."""
    out = subprocess.run(["make", "-s", "--no-print-directory", "--eval", f"print-var: ; @echo $({name})",
                          "print-var"], cwd=clone, env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def recipe(clone: Path, env: dict[str, str], target: str, make_args: list[str]) -> list[str]:
    """The shell lines of ``target`` that make would run now (after the set-up: nothing of ``venv``)."""
    out = subprocess.run(["make", "-n", "--no-print-directory", target, *make_args], cwd=clone, env=env,
                         capture_output=True, text=True)
    if out.returncode:
        raise MainJobError(f"`make -n {target}` failed in {clone}: {out.stderr.strip()}")
    lines = [ln for ln in out.stdout.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if any("-m venv" in ln or "pip install" in ln for ln in lines):
        raise MainJobError(f"`make -n {target}` still wants to build the environment after `make venv`:\n"
                           + "\n".join(lines))
    return lines


def cpu_busy_seconds() -> float | None:
    """Seconds of CPU time all processes have used since boot (``/proc/stat``), None off Linux."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in (fields + ["0"] * 8)[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds used by this process and the children it waited for (the run's own)."""
    import resource

    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_CHILDREN),
                                                 resource.getrusage(resource.RUSAGE_SELF)))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def pytest_counts(output: str) -> dict[str, int]:
    """pytest's final counts (``12 passed, 1 skipped in 3.2s``) from its output."""
    tail = [ln for ln in output.splitlines() if re.search(r"\d+ (passed|failed|error)", ln)]
    if not tail:
        return {}
    plural = {"error": "errors", "warning": "warnings"}
    return {plural.get(k, k): int(n)
            for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected|warnings?)",
                                   tail[-1])}


def run_folder(folder: Path) -> dict:
    """What the run folder says about the distill command: the iterations' seconds, the final
    evaluation (its seconds and accuracy) and the run's own wall clock (the set file's metadata)."""
    rows = [json.loads(ln) for ln in (folder / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    steps = [r for r in rows if "seconds" in r and "eval" not in r]
    final = next(r for r in reversed(rows) if r.get("final"))
    (model, ev), *more = final["eval"].items()
    if more:
        raise MainJobError(f"{folder}: the final evaluation has several models; this script reads one")
    out = {"iterations": len(steps), "iteration_seconds": steps[-1]["seconds"] if steps else 0.0,
           "evaluation_seconds": ev["seconds"], "model": model, "protocol": ev["protocol"]["name"],
           "n_models": ev["n_models"], "acc_mean": ev["acc_mean"], "acc_std": ev["acc_std"]}
    out["seconds_per_iteration"] = out["iteration_seconds"] / max(out["iterations"], 1)
    out["evaluation_seconds_per_model"] = out["evaluation_seconds"] / max(out["n_models"], 1)
    meta = safetensors_meta(folder / "distilled.safetensors")
    out["run_wall_seconds"] = meta.get("wall_seconds")
    return out


def safetensors_meta(path: Path) -> dict:
    """The datadistill metadata of a set file, read from the safetensors header (no torch needed)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    text = next(iter((header.get("__metadata__") or {}).values()), "{}")
    return json.loads(text)


def phase_of(line: str, what: str) -> str:
    if what == "test":
        return "numeric_other_path" if "-m numeric" in line else "tests"
    if "data prepare" in line:
        return "data"
    if "datadistill.cli distill" in line or "datadistill distill" in line:
        return "distill"
    if line.startswith("cat ") and "report.md" in line:
        return "report"
    raise MainJobError(f"unexpected line in the recipe of `make distill`: {line}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--what", choices=("distill", "test"), default="distill", help="the make target to time")
    ap.add_argument("--avx2", action="store_true", help="force PyTorch's AVX2 path (" +
                    " ".join(f"{k}={v}" for k, v in AVX2.items()) + ")")
    ap.add_argument("--keep", action="store_true", help="keep the clone (and its run folder and log)")
    ap.add_argument("--dir", type=Path, help="clone into this new folder (default: a temporary one)")
    ap.add_argument("--results", type=Path, help=f"records file (default {RESULTS.relative_to(ROOT)}; "
                    f"with --smoke {SMOKE_RESULTS.relative_to(ROOT)})")
    ap.add_argument("--smoke", action="store_true", help="a toy size, to check this script (minutes)")
    args = ap.parse_args(argv)
    results = args.results or (SMOKE_RESULTS if args.smoke else RESULTS)
    if args.dir is not None and args.dir.exists():
        ap.error(f"--dir {args.dir} exists; name a new folder")

    env = dict(os.environ)
    if args.avx2:
        env.update(AVX2)
    forced = {k: env[k] for k in CAPABILITY_ENV if k in env}
    load_before = os.getloadavg()
    busy0, ours0 = cpu_busy_seconds(), own_cpu_seconds()
    started = datetime.datetime.now(datetime.timezone.utc)

    clone = args.dir or Path(tempfile.mkdtemp(prefix="datadistill-main-job-")) / "datadistill"
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()
    t = time.perf_counter()
    subprocess.run(["git", "clone", "--quiet", "--no-checkout", str(ROOT), str(clone)], check=True)
    subprocess.run(["git", "checkout", "--quiet", "--detach", head], cwd=clone, check=True)
    clone_seconds = time.perf_counter() - t
    print(f"main_job: cloned {head[:7]} into {clone} ({clone_seconds:.1f} s)", flush=True)

    given = argv if argv is not None else sys.argv[1:]
    rec: dict = {"what": args.what, "smoke": args.smoke, "commit": head[:7],
                 "date": started.isoformat(timespec="seconds"),
                 "command": "python " + shlex.join([os.path.relpath(__file__, ROOT), *given]),
                 "cpu": cpu_name(), "cpus": os.cpu_count(), "env": forced,
                 "load_before": [round(v, 2) for v in load_before], "idle_before": load_before[0] < IDLE_LOAD,
                 "clone_seconds": round(clone_seconds, 2)}
    ok = True
    with open(clone / "main_job.log", "ab") as log:  # untracked in the clone, kept with it
        try:
            venv_dir = Path(make_var(clone, env, "VENV_DIR"))
            rec["venv_cache"] = "present" if (venv_dir / ".complete").is_file() else "absent"
            t_total = time.perf_counter()
            rc, secs, _ = run_logged(["make", "--no-print-directory", "venv"], clone, env, log)
            rec["setup_seconds"] = round(secs, 2)
            if rc:
                raise MainJobError(f"`make venv` failed with status {rc}")
            out = subprocess.run([str(clone / ".venv" / "bin" / "python"), "-c", MACHINE], cwd=clone, env=env,
                                 capture_output=True, text=True, check=True)
            rec.update(json.loads(out.stdout))
            make_args = [f"OUT={SMOKE_OUT}"] if args.smoke and args.what == "distill" else []
            commands = []
            for line in recipe(clone, env, args.what, make_args):
                phase = phase_of(line, args.what)
                if args.smoke and phase == "distill":
                    line += " " + " ".join(SMOKE_DISTILL)
                if args.smoke and args.what == "test":
                    line += " " + " ".join(SMOKE_TEST)
                print(f"main_job: [{phase}] {line}", flush=True)
                rc, secs, output = run_logged(line, clone, env, log)
                commands.append({"phase": phase, "command": line, "seconds": round(secs, 2), "rc": rc,
                                 **(pytest_counts(output) if args.what == "test" else {})})
                if phase == "data":
                    rec["mnist_cached"] = "already prepared" in output
                if rc:
                    ok = False
                    if args.what == "distill":
                        break
            rec["total_seconds"] = round(time.perf_counter() - t_total, 2)
            rec["commands"] = commands
            for c in commands:
                key = f"{c['phase']}_seconds"
                rec[key] = round(rec.get(key, 0.0) + c["seconds"], 2)
            if args.what == "distill" and ok:
                got = run_folder(clone / (SMOKE_OUT if args.smoke else OUT))
                rec["distill_command_seconds"] = rec.pop("distill_seconds")
                rec.update({k: round(v, 2) if isinstance(v, float) else v for k, v in got.items()})
                rec["distill_other_seconds"] = round(rec["distill_command_seconds"] - got["iteration_seconds"]
                                                     - got["evaluation_seconds"], 2)
        except (MainJobError, subprocess.CalledProcessError) as e:
            ok = False
            rec["error"] = str(e)
            print(f"main_job: {e}", file=sys.stderr)
    busy1, ours1 = cpu_busy_seconds(), own_cpu_seconds()
    if busy0 is not None and busy1 is not None:
        rec["other_cpu_seconds"] = round(max(0.0, (busy1 - busy0) - (ours1 - ours0)), 1)
    rec["ok"] = ok
    if args.keep:
        rec["clone"] = str(clone)
    results.parent.mkdir(parents=True, exist_ok=True)
    with open(results, "a") as f:
        f.write(json.dumps(rec) + "\n")
    print(json.dumps(rec, indent=1), flush=True)
    print(f"main_job: appended to {results}", flush=True)
    if not args.keep:
        shutil.rmtree(clone if args.dir else clone.parent, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
