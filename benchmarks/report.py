"""Write docs/results.md and docs/img/acc_vs_ipc.png from the records in benchmarks/results/.

    python benchmarks/report.py                    # docs/results.md + docs/img/acc_vs_ipc.png
    python benchmarks/report.py --methods-table    # print the best CPU accuracy per method (for README.md)
    python benchmarks/report.py --cost-table       # print the node-hours of the papers' budgets (paper_cost.py)
    python benchmarks/report.py --check            # exit 1 when docs/results.md is not what the records give

Every table row is the latest record of one suite job (benchmarks/suites/*.yaml); the commands that
produced them are listed under each table, with the commit and the machine of each row.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from datadistill.fileio import atomic_write_text  # noqa: E402
from suites import (RELEASED_DIR, RESULTS_DIR, ROOT, SUITES_DIR, SuiteError, SELECTIONS, check_claims,  # noqa: E402
                    latest_record, load_suite, pooled, read_records, reruns)

DOC = ROOT / "docs" / "results.md"
PLOT = ROOT / "docs" / "img" / "acc_vs_ipc.png"
COMMAND = "python benchmarks/report.py"
DATASETS = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "digits": "digits"}
# the methods table: method -> paper
PAPERS = {
    "dd": "Wang et al., Dataset Distillation (arXiv 2018)",
    "dc": "Zhao et al., Dataset Condensation with Gradient Matching (ICLR 2021)",
    "dsa": "Zhao & Bilen, Dataset Condensation with Differentiable Siamese Augmentation (ICML 2021)",
    "dm": "Zhao & Bilen, Dataset Condensation with Distribution Matching (WACV 2023)",
    "mtt": "Cazenavette et al., Dataset Distillation by Matching Training Trajectories (CVPR 2022)",
    "haba": "Liu et al., Dataset Distillation via Factorization (NeurIPS 2022)",
    "datm": "Guo et al., Towards Lossless Dataset Distillation via Difficulty-Aligned Trajectory Matching (ICLR 2024)",
    "rded": "Sun et al., On the Diversity and Realism of Distilled Dataset (CVPR 2024)",
    "frepo": "Zhou et al., Dataset Distillation using Neural Feature Regression (NeurIPS 2022)",
    "herding": "Welling, Herding Dynamical Weights to Learn (ICML 2009)",
    "kcenter": "Sener & Savarese, Active Learning for CNNs: A Core-Set Approach (ICLR 2018)",
    "random": "random real images per class (baseline)",
}
ORDER = {m: i for i, m in enumerate(["full", "random", "herding", "kcenter", "dd", "dc", "dsa", "dm", "mtt", "haba",
                                                  "datm", "rded", "frepo"])}
SOFT_METHODS = ("datm", "rded", "frepo")  # methods whose figures are the soft suite's score records
COST = "paper_cost.jsonl"  # paper_cost.py's extrapolated node-hours: their own table, never a job's result
NOT_RESULTS = {"smoke.jsonl", COST}
SOFT = "soft.jsonl"  # the soft-label suite: its score records have their own table; its distill runs are inputs
# (the papers' own figures are claims in benchmarks/suites/paper.yaml: the claims table)


# -- records -----------------------------------------------------------------------------------------
class Row(dict):
    """A record with where it is: ``file`` (name in benchmarks/results/) and ``line`` (1-based)."""


def records() -> list[Row]:
    out = []
    for path in sorted(RESULTS_DIR.glob("*.jsonl")):
        if path.name in NOT_RESULTS:
            continue
        for n, r in enumerate(read_records(path), 1):
            row = Row(r)
            row["file"], row["line"] = path.name, n
            out.append(row)
    return out


def latest_per_job(rows: list[Row]) -> dict[str, list[Row]]:
    """Each job's rows of its latest run (one per evaluated model)."""
    by_job: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        if r.get("job"):
            by_job[r["job"]].append(r)
    out = {}
    for job, rs in by_job.items():
        run = [rs[-1]]  # the last record, and the records of the other models its run appended before it
        for r in reversed(rs[:-1]):
            if (r.get("commit"), r.get("command")) != (run[0].get("commit"), run[0].get("command")) \
                    or r.get("model") in {x.get("model") for x in run}:
                break
            run.insert(0, r)
        out[job] = run
    return out


def suite_of() -> dict[str, str]:
    names = {}
    for path in sorted(SUITES_DIR.glob("*.yaml")):
        for j in load_suite(path).jobs:
            names.setdefault(j.id, path.stem)
    return names


def link(r: Row, prefix: str) -> str:
    return f"{prefix}benchmarks/results/{r['file']}#L{r['line']}"


def pm(r: dict, key: str = "acc_mean") -> str:
    std = r.get(key.replace("_mean", "_std") if key.endswith("_mean") else key + "_std")
    if r.get("n_models") == 1:  # one network: no spread to show
        std = None
    return f"{r[key]:.2f} ± {std:.2f}" if std is not None else f"{r[key]:.2f}"


def job_rows(rows: list[Row]) -> dict[str, list[Row]]:
    """Every record of each job, in file order."""
    out: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        if r.get("job"):
            out[r["job"]].append(r)
    return out


def figure(rs: list[Row]) -> dict | None:
    """A job's figure (see `suites.pooled`): its latest record, or the pool of its reruns with their count."""
    return pooled(reruns(rs))


# the methods table compares sets on one protocol: ours (`dc`, ConvNet, 300 epochs, no augmentation)
TABLE_PROTOCOL = "dc"


def headline_jobs() -> dict[tuple, str]:
    """(method, dataset, ipc) -> the job whose figure the methods table shows. A released set's job
    (benchmarks/released/index.json); for the soft-label methods, the soft suite's score job (the set
    with its own labels); otherwise the one `cpu` suite job of that method, dataset and size."""
    out: dict[tuple, str] = {}
    for j in load_suite(SUITES_DIR / "cpu.yaml").jobs:
        if j.kind == "distill" and j.method in PAPERS and j.method not in SOFT_METHODS and (j.ipc or 0) > 0:
            key = (j.method, j.dataset, j.ipc)
            if j.method != "dd":
                out.setdefault(key, j.id)
    for e in json.loads((RELEASED_DIR / "index.json").read_text()):
        out[(e["method"], e["dataset"], e["ipc"])] = e["job"]
    for j in load_suite(SUITES_DIR / "soft.yaml").jobs:
        src = j.id.removeprefix("score-")
        m = src.split("-", 1)[0]
        if j.kind == "score" and m in SOFT_METHODS:
            d, ipc = src.split("-", 1)[1].rsplit("-ipc", 1)
            out[(m, d, int(ipc))] = j.id
    return out


def headline(rows: list[Row]) -> dict[tuple, dict]:
    """(method, dataset, ipc) -> the headline job's figure on `TABLE_PROTOCOL` (with ``row``: its latest
    record, for the link), DD excluded (it has its own protocol and table)."""
    by_job = job_rows(rows)
    out = {}
    for key, job in headline_jobs().items():
        if key[0] == "dd":
            continue
        rs = [r for r in by_job.get(job, []) if r.get("protocol") == TABLE_PROTOCOL]
        fig = figure(rs)
        if fig is not None:
            out[key] = {**fig, "row": rs[-1], "method": key[0], "dataset": key[1], "ipc": key[2]}
    return out


def pm_fig(f: dict) -> str:
    """``mean ± std``, with the number of runs when the figure pools reruns."""
    text = pm(f["row"]) if f["n_runs"] == 1 else f"{f['acc_mean']:.2f} ± {f['acc_std']:.2f}"
    return text + (f" ({f['n_runs']} runs)" if f["n_runs"] > 1 else "")


# -- tables ------------------------------------------------------------------------------------------
def methods_table(rows: list[Row], prefix: str = "") -> str:
    """One figure per (method, dataset) at 1 and 10 images per class, all on the `dc` protocol, each
    linked to its record; DD, on its own protocol, in a table of its own below."""
    top = headline(rows)
    cols = [(d, i) for d in ("mnist", "fashion_mnist") for i in (1, 10)]
    head = ("| method | paper | `--method` | " + " | ".join(f"{DATASETS[d]} {i}/class" for d, i in cols)
            + " | labels | networks |")
    lines = [f"All on the `{TABLE_PROTOCOL}` protocol: fresh ConvNets, SGD, 300 epochs, no augmentation, final test "
             "accuracy (%), mean ± std over the networks.", "", head, "|" + "---|" * (head.count("|") - 1)]
    for m in sorted({k[0] for k in top}, key=lambda m: ORDER.get(m, 99)):
        cells = []
        for d, i in cols:
            f = top.get((m, d, i))
            cells.append(f"[{pm_fig(f)}]({link(f['row'], prefix)})" if f else "-")
        figs = [f for k, f in top.items() if k[0] == m]
        labels = "; ".join(sorted({_labels(f["row"]) for f in figs}))
        nets = ", ".join(sorted({str(f["row"]["n_models"]) for f in figs}, key=int))
        lines.append(f"| {m} | {PAPERS[m]} | `{m}` | " + " | ".join(cells) + f" | {labels} | {nets} |")
    full = {r["dataset"]: r for r in rows if r.get("method") == "full" and r.get("protocol") == TABLE_PROTOCOL}
    if full:
        cells = [f"[{pm(full[d])}]({link(full[d], prefix)})" if d in full and i == 1 else "" for d, i in cols]
        eps = ", ".join(sorted({str(r["epochs"]) for r in full.values()}))
        lines.append("| whole training set | - | `datadistill evaluate --full` | " + " | ".join(cells)
                     + f" | hard ({eps} epochs on all images) | {', '.join(sorted({str(r['n_models']) for r in full.values()}))} |")
    dd_jobs = {j for k, j in headline_jobs().items() if k[0] == "dd"}
    dd = [r for r in rows if r.get("job") in dd_jobs]
    if dd:
        lines += ["", "Dataset Distillation on its own protocol (`dd`: the learned steps replayed on LeNet), not "
                  "comparable with the columns above:", "",
                  "| method | paper | MNIST 1/class | MNIST 10/class | networks |", "|---|---|---|---|---|"]
        by = {r["ipc"]: r for r in dd}
        cells = [f"[{pm(by[i])}]({link(by[i], prefix)})" if i in by else "-" for i in (1, 10)]
        lines.append(f"| dd | {PAPERS['dd']} | " + " | ".join(cells)
                     + f" | {', '.join(str(by[i]['n_models']) for i in (1, 10) if i in by)} |")
    return "\n".join(lines)


def _labels(r: dict) -> str:
    return {"teacher": "a teacher's, every batch", "soft": "its learned soft labels"}.get(r.get("labels") or "", "hard")


def length(r: dict, unit: str = "ep") -> str:
    """How long a record's models trained: ``1000 steps`` (a protocol of optimizer steps), else ``300 ep``
    (``unit`` names the epochs)."""
    return f"{r['steps']} steps" if r.get("steps") else f"{r.get('epochs')} {unit}"


def _evaluation(r: dict) -> str:
    ep = f", {length(r, 'epochs')}" if r.get("steps") or r.get("epochs") else ""
    labels = {"teacher": ", teacher's labels", "soft": ", its soft labels"}.get(r.get("labels") or "", "")
    return f"{r['n_models']} x {r['model']}, `{r['protocol']}` protocol{ep}{labels}"


def main_tables(jobs: dict[str, list[Row]], suites: dict[str, str]) -> tuple[str, list[Row]]:
    """ConvNet-protocol records (every method but DD), one table per (dataset, images per class)."""
    rows = [rs[0] for rs in jobs.values() if "acc_mean" in rs[0] and rs[0].get("method") not in (None, "dd")
            and not rs[0].get("step_size") and rs[0].get("file") != SOFT and rs[0].get("protocol") == TABLE_PROTOCOL
            and not suites.get(rs[0]["job"], "").startswith(FIDELITY)]  # their own section: `fidelity_section`
    out = []
    groups = defaultdict(list)
    for r in rows:
        groups[(r["dataset"], r["ipc"])].append(r)
    for (ds, ipc) in sorted(groups, key=lambda k: (k[0] != "mnist", k[0], k[1])):
        title = f"### {DATASETS.get(ds, ds)}, " + (f"{ipc} image(s) per class" if ipc else "whole training set")
        head = ("| method | setting | accuracy (%) | evaluation | iterations | s / it | stored floats | commit "
                "| machine | job |")
        lines = [title, "", head, "|" + "---|" * (head.count("|") - 1)]
        for r in sorted(groups[(ds, ipc)], key=lambda r: (ORDER.get(r["method"], 99), -r["acc_mean"])):
            stored = f"{r['stored_floats']:,}" if r.get("stored_floats") else "-"
            if "bases_per_class" in r:
                stored += f" ({r['bases_per_class']} bases/class + {r['n_hallucinators']} hallucinators)"
            lines.append(f"| {r['method']} | {r['setting']} | {pm(r)} | {_evaluation(r)} | {r['iterations']} "
                         f"| {r['seconds_per_iteration']:.2f} | {stored} | {r['commit']} | {r['device']} "
                         f"| [{r['job']}](#cmd-{r['job']}) |")
        out.append("\n".join(lines))
    return "\n\n".join(out), rows


def dd_table(jobs: dict[str, list[Row]]) -> tuple[str, list[Row]]:
    rows = [rs[0] for rs in jobs.values() if rs[0].get("method") in ("dd", "random_real", "kmeans", "average")]
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    order = {"dd": 0, "random_real": 1, "kmeans": 2, "average": 3}
    head = ("| dataset | IPC | setting | method | step size | test acc. after (%) | eval nets | acc. before (%) "
            "| 0s predicted as 1, before -> after (%) | iterations | s / it | commit | machine | job |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in sorted(rows, key=lambda r: (settings.index(r["setting"]), order[r["method"]], r.get("step_size", ""))):
        step = r.get("step_size") or "learned"
        if r.get("lr") is not None:
            step += f" ({r['lr']:g})"
        attack = (f"{r['attack_success_before']:.1f} -> {pm(r, 'attack_success_after')}"
                  if "attack_success_after" in r else "-")
        before = pm(r, "acc_before") if "acc_before" in r else "-"
        lines.append(f"| {r['dataset']} | {r['ipc']} | {r['setting']} | {r['method']} | {step} | **{pm(r)}** "
                     f"| {r['n_models']} | {before} | {attack} | {r['iterations']} | {r['seconds_per_iteration']:.3f} "
                     f"| {r['commit']} | {r['device']} | [{r['job']}](#cmd-{r['job']}) |")
    return "\n".join(lines), rows


def xarch_table(jobs: dict[str, list[Row]], suites: dict[str, str]) -> tuple[str, list[Row]]:
    rows = [rs[0] for j, rs in jobs.items() if j.startswith("xarch-")]
    models = list(dict.fromkeys(r["model"] for r in rows))
    of = defaultdict(dict)
    for r in rows:
        of[r["job"][len("xarch-"):-len(r["model"]) - 1]][r["model"]] = r
    head = ("| distilled set (job) | ConvNet, its own record | " + " | ".join(f"{m} (lr 0.01)" for m in models)
            + " | RMS of its examples | commit |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for src, by_model in of.items():
        own = jobs.get(src, [None])[0]
        cells = [pm(own) if own else "-"] + [pm(by_model[m]) if m in by_model else "-" for m in models]
        first = next(iter(by_model.values()))
        commits = ", ".join(dict.fromkeys(r["commit"] for r in by_model.values()))
        lines.append(f"| {src} | " + " | ".join(cells) + f" | {first['input_rms']:,.1f} | {commits} |")
    return "\n".join(lines), rows


def bases_table(jobs: dict[str, list[Row]]) -> tuple[str, list[Row]]:
    rows = [rs[0] for j, rs in jobs.items() if j.startswith("bases-")]
    lines = ["| HaBa set (job) | full set, its own record | bases alone | images | commit |", "|---|---|---|---|---|"]
    for r in rows:
        src = r["job"][len("bases-"):]
        own = jobs.get(src, [None])[0]
        lines.append(f"| {src} | {pm(own) if own else '-'} | {pm(r)} | {r['n_images']} | {r['commit']} |")
    return "\n".join(lines), rows


def experts_table(jobs: dict[str, list[Row]]) -> tuple[str, list[Row]]:
    rows = [rs[0] for rs in jobs.values() if rs[0].get("what") == "experts"]
    lines = ["| job | dataset | experts x epochs | s / expert epoch | final test acc. (%) | machine | commit |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| [{r['job']}](#cmd-{r['job']}) | {r['dataset']} | {r['n_experts']} x {r['epochs']} "
                     f"| {r['seconds_per_expert_epoch']:.0f} | {r['mean_final_test_acc']:.2f} | {r['device']} "
                     f"| {r['commit']} |")
    return "\n".join(lines), rows


def _command(r: Row) -> str:
    """A speed record's command line, with the environment that forced its CPU path."""
    return " ".join([*(f"{k}={v}" for k, v in r.get("env", {}).items()), r["command"]])


def _mem(r: Row) -> str:
    """A speed record's peak resident memory, with what the process held before the timed calls."""
    if not r.get("peak_rss_mb"):
        return "-"
    before = r.get("rss_before_mb")
    return f"{r['peak_rss_mb']:.0f}" + (f" ({before:.0f})" if before else "")


def speed_table(rows: list[Row]) -> str:
    """The latest record per (benchmark, images per class, CPU capability, device) of speed.jsonl."""
    latest: dict[tuple, Row] = {}
    for r in rows:
        if r["benchmark"] in ("eval", "eval_breakdown", "dc_breakdown"):
            continue  # the evaluator's own tables
        latest[(r["benchmark"], r["ipc"], r["capability"], r["device"])] = r
    lines = ["| iteration | CPU path | matmul GFLOP/s | GFLOP | floor s | ours s | ours / floor | reference loop s "
             "| ours vs reference | peak RSS MiB (held before) | machine | commit | command |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(latest.values(), key=lambda r: (r["benchmark"], r["ipc"], r["capability"])):
        what = f"{r['benchmark'].split('_')[0].upper()} {DATASETS.get(r['dataset'], r['dataset'])} {r['ipc']}/class"
        lines.append(f"| {what} | {r['capability']} | {r['matmul_gflops']:.0f} | {r['gflop']:,.0f} "
                     f"| {r['floor_s']:.2f} "
                     f"| {r['ours_s']:.2f} | **{r['ours_over_floor']:.2f}x** | {r['reference_loop_s']:.2f} "
                     f"| {r['speedup_vs_reference_loop']:.2f}x faster | {_mem(r)} "
                     f"| {r['device']} | {r['commit']} "
                     f"| `{_command(r)}` |")
    return "\n".join(lines)


def eval_speed_table(rows: list[Row]) -> str:
    """The latest record per (measurement, CPU capability, device) of the evaluator's speed."""
    latest = {(r["what"], r["capability"], r["device"]): r for r in rows if r["benchmark"] == "eval"}
    if not latest:
        return "No records yet (`python benchmarks/speed_eval.py`)."
    lines = ["| measurement | CPU path | matmul GFLOP/s | GFLOP | floor s | ours s | ours / floor | peak RSS MiB (held before) "
             "| machine | commit | command |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(latest.values(), key=lambda r: (r["what"], r["capability"])):
        ratio = f"**{r['ours_over_floor']:.2f}x**" if "ours_over_floor" in r else "-"
        lines.append(f"| {r['what']} | {r['capability']} | {r['matmul_gflops']:.0f} | {r.get('gflop', '-')} "
                     f"| {r.get('floor_s', '-')} | {r['ours_s']} | {ratio} | {_mem(r)} "
                     f"| {r['device']} | {r['commit']} "
                     f"| `{_command(r)}` |")
    return "\n".join(lines)


def breakdown_table(rows: list[Row]) -> str:
    """The latest record per (CPU capability, device) of where the evaluator's step spends its time."""
    latest = {(r["what"], r["capability"], r["device"]): r for r in rows
              if r["benchmark"] in ("eval_breakdown", "dc_breakdown")}
    if not latest:
        return "No records yet (`python benchmarks/speed_breakdown.py`)."
    lines = ["| measurement | CPU path | ours / floor | convolutions | fused blocks | eager norm, ReLU, pool | other "
             "| convolutions / their floor | machine | commit | command |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(latest.values(), key=lambda r: (r["what"], r["capability"])):
        sh = r["share"]
        lines.append(f"| {r['what']} | {r['capability']} | {r['ours_over_floor']:.2f}x | {sh['convolution']:.0%} "
                     f"| {sh['fused_block']:.0%} | {sh.get('eager_block', 0):.0%} | {sh['other']:.0%} "
                     f"| **{r['conv_over_floor']:.2f}x** | {r['device']} "
                     f"| {r['commit']} | `{_command(r)}` |")
    return "\n".join(lines)


def memory_table(rows: list[Row]) -> str:
    lines = ["| unrolled steps | images per step | gradient checkpointing | s / iteration | peak extra MB | machine "
             "| commit | command |", "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["unrolled_steps"], r["checkpoint"])):
        lines.append(f"| {r['unrolled_steps']} | {r['per_step']} | {'yes' if r['checkpoint'] else 'no'} "
                     f"| {r['seconds_per_iteration']:.3f} | {r['peak_extra_mb']:.0f} | {r['device']} | {r['commit']} "
                     f"| `{r['command']}` |")
    return "\n".join(lines)


def executor_table(rows: list[Row]) -> str:
    """Per grid and backend, the latest record of `benchmarks/executor_overhead.py`."""
    latest = {(r["settings"]["grid"], r["backend"], r["capability"]): r for r in rows}
    if not latest:
        return "No records yet (`python benchmarks/executor_overhead.py`)."
    lines = ["| grid | backend | threads per task | workers | wall s | vs serial, 1 thread | same results | CPU path "
             "| machine | commit | command |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in latest.values():
        g = r["settings"]
        what = (f"evaluate {g['models']} models, {g['epochs']} epochs" if g["grid"] == "evaluate"
                else f"{g['experts']} experts x {g['epochs']} epoch, {g['dataset']}")
        same = {True: "yes", False: "**no**", None: "-"}[r.get("same_as_serial_1thread")]
        ratio = f"{r['over_serial_1thread']:.2f}x" if r.get("over_serial_1thread") else "-"
        lines.append(f"| {what} | {r['backend']} | {r['threads_per_task']} | {r['workers']} | {r['wall_s']:.1f} "
                     f"| {ratio} | {same} | {r['capability']} | {r['device']} | {r['commit']} | `{r['command']}` |")
    return "\n".join(lines)


def batched_table(rows: list[Row]) -> str:
    """Per device, CPU path and N, the latest record of `benchmarks/batched_eval.py`."""
    latest = {(r["device_name"], r["capability"], r["epochs"], r["n_models"]): r for r in rows}
    if not latest:
        return "No records yet (`python benchmarks/batched_eval.py`)."
    lines = ["| models N | set | epochs | one after another s | batched s | speed-up | accuracy (sequential / batched) "
             "| largest difference (test images) | device | CPU path | commit | command |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(latest.values(), key=lambda r: (r["device_name"], r["capability"], r["n_models"])):
        lines.append(f"| {r['n_models']} | {r['n_images']} images ({r['dataset']}) | {r['epochs']} "
                     f"| {r['sequential_s']:.1f} | {r['batched_s']:.1f} | **{r['speedup']:.2f}x** "
                     f"| {r['acc_mean_sequential']:.2f} / {r['acc_mean_batched']:.2f} | {r['max_diff_test_images']} "
                     f"| {r['device_name']} | {r['capability']} | {r['commit']} | `{r['command']}` |")
    return "\n".join(lines)


def commands(rows: list[Row], suites: dict[str, str]) -> str:
    """Each row's job, anchored by its id: how to rerun it through its suite, and the command its
    record ran (which may name a script the suites have since replaced)."""
    lines = ["<details><summary>Commands</summary>", ""]
    for r in rows:
        suite = suites.get(r["job"], "?")
        lines.append(f"- <a id=\"cmd-{r['job']}\"></a>`{r['job']}`: rerun with "
                     f"`python benchmarks/run.py {suite} --only {r['job']}`; the record "
                     f"[{r['file']}:{r['line']}]({link(r, '../')}) ran `{r['command']}`")
    lines += ["", "</details>"]
    return "\n".join(lines)


IMAGE_FLOATS = {"mnist": 28 * 28, "fashion_mnist": 28 * 28, "digits": 8 * 8}  # one image's floats
CLASSES = {"mnist": 10, "fashion_mnist": 10, "digits": 10}
# methods whose file holds the images and their class indices only: a plain set's storage by definition
# (their older records predate ``stored_floats``)
IMAGES_ONLY = {"random", "herding", "kcenter", "dc", "dsa", "dm"}


def _arg(args: tuple[str, ...] | list[str], key: str) -> str | None:
    """The value of ``--flag V`` or ``key=V`` in a job's arguments (the last one given), else None."""
    out = None
    for i, a in enumerate(args):
        if a == key and i + 1 < len(args):
            out = args[i + 1]
        elif key.startswith(("method_config.", "eval.")) and a.startswith(key + "="):
            out = a.split("=", 1)[1]
    return out


def set_how(suite, job) -> dict:
    """How the set a score or evaluate job trains on was made, from its distillation job and that job's
    latest record: ``storage`` (stored floats over a plain set's at the same images per class, with
    label vectors and a learned lr counted; 1 for a method that stores images only, `IMAGES_ONLY`),
    ``iterations``, ``unrolled`` (steps per trajectory segment, trajectory methods) and ``experts``
    (their count and epochs, from the experts job it needs)."""
    src = suite.job(job.of)
    owner = load_suite(job.of.split(":")[0]) if ":" in job.of else suite
    rec = latest_record(src)
    out: dict = {"storage": None, "iterations": rec.get("iterations") if rec else None, "unrolled": None,
                 "experts": None, "one_shot": None}
    plain = (src.ipc or 0) * CLASSES.get(src.dataset, 0) * IMAGE_FLOATS.get(src.dataset, 0)
    if rec and rec.get("stored_floats") and plain:
        out["storage"] = rec["stored_floats"] / plain
    elif rec and src.method in IMAGES_ONLY:
        out["storage"] = 1.0
    if src.method in SELECTIONS or src.method == "rded":  # one-shot: no iterations to count
        out["iterations"] = None
        out["one_shot"] = "selection" if src.method in SELECTIONS else "one pass (crops scored by a teacher)"
    if src.method in ("mtt", "datm", "haba"):
        out["unrolled"] = getattr(_method_config(src), "syn_steps", None)
        if src.needs:
            ex = owner.job(src.needs)
            out["experts"] = (_arg(ex.args, "--experts"), _arg(ex.args, "--epochs"))
    return out


def _method_config(job):
    """A distillation job's method configuration as `distill` resolves it (presets and overrides)."""
    from datadistill import cli
    from datadistill.resolve import resolve

    args = [a.replace("{runs}", "runs") for a in job.args]
    argv = ["distill", "--method", job.cli_method or job.method, "--dataset", job.dataset, "--ipc", str(job.ipc), *args]
    return resolve(cli.distill_config(cli.parse_args(argv))).method_cfg


def _budget(how: dict) -> str:
    parts = []
    if how["iterations"] is not None:
        parts.append(f"{how['iterations']} it" + (f" x {how['unrolled']} steps" if how["unrolled"] else ""))
    if how["experts"]:
        n, ep = how["experts"]
        parts.append(f"experts {n or '?'} x {ep or '?'} ep")
    return ", ".join(parts) or how["one_shot"] or "-"


def soft_table(jobs: dict[str, list[Row]]) -> str:
    """Suite ``soft``: each set's accuracy with its labels beside DD-Ranking's scores, one table per
    (dataset, images per class); jobs without a record are listed with their command."""
    suite = load_suite(SUITES_DIR / "soft.yaml")
    head = ("| set | labels | protocol | teacher | storage | budget | accuracy (%) | random subset (%) | IOR (points) "
            "| hard labels (%) | HLR (points) | LRS | s / it | distill wall (s) | scores wall (s) | commit | machine |")
    groups: dict[tuple, list[str]] = defaultdict(list)
    for j in suite.jobs:
        if j.kind != "score":
            continue
        src = suite.job(j.of)
        ds, ipc = src.dataset or "?", src.ipc or 0
        label = j.id.removeprefix("score-").rsplit(f"-{ds}-ipc{ipc}", 1)[0]
        run = jobs.get(j.id)
        if not run:
            groups[(ds, ipc)].append(f"| {label} | not run: `python benchmarks/run.py soft --only {j.id}` |"
                                     + " |" * (head.count("|") - 3))
            continue
        r = run[0]
        how = r.get("labels") or "hard"
        if how == "teacher":
            how = f"teacher, {r.get('label_loss')} T={r.get('label_temperature'):g}"
        elif how == "soft":
            how = f"stored soft, {r.get('label_loss')}"
        spi = f"{r['seconds_per_iteration']:.2f}" if r.get("seconds_per_iteration") else "-"
        wall = f"{r['distill_wall_seconds']:.0f}" if r.get("distill_wall_seconds") else "-"
        made = set_how(suite, j)
        t = r.get("teacher") or {}
        teacher = (f"{Path(t['path']).stem} ({t['test_accuracy']:.2f}%, sha256 {str(t.get('sha256') or '?')[:8]})"
                   if t.get("path") else "-")  # the digest: a rebuilt teacher of equal accuracy is another teacher
        store = f"{made['storage']:.3f}x" if made["storage"] else "-"
        groups[(ds, ipc)].append(
            f"| [{label}]({link(r, '../')}) | {how} | `{r.get('protocol')}` {length(r)} | {teacher} | {store} "
            f"| {_budget(made)} | {pm(r)} | {r['random']:.2f} ({r['random_labels']}) "
            f"| {r['ior']:+.2f} | {r['hard']:.2f} | {r['hlr']:.2f} | {r['lrs']:.3f} "
            f"| {spi} | {wall} | {r['wall_seconds']:.0f} | {r['commit']} | {r.get('device', '?')} |")
    out = []
    for (ds, ipc) in sorted(groups, key=lambda k: (k[0] != "mnist", k[1])):
        out += [f"### Soft labels: {DATASETS.get(ds, ds)}, {ipc} image(s) per class", "", head,
                "|" + "---|" * (head.count("|") - 1), *groups[(ds, ipc)], ""]
    return "\n".join(out)


APPS = "apps.yaml"


def app_jobs() -> list:
    return list(load_suite(SUITES_DIR / APPS).jobs)


def _app_caption(r: Row, extra: str) -> str:
    trained = r.get("trained_at") or []
    at = f"networks trained at {', '.join(trained)}, recorded at {r['commit']}" if trained else f"commit {r['commit']}"
    return f"[record]({link(r, '../')}), {at}, {r.get('device', '?')}; {extra}; command: `{r['command']}`"


def apps_section(jobs: dict[str, list[Row]]) -> str:
    """Suite ``apps``: one table (and picture) per application and dataset, or the command of a job not
    run yet."""
    out = []
    for title, app in (("Continual learning", "continual"), ("Architecture search", "nas"),
                       ("Membership inference", "privacy")):
        out += [f"### {title}", ""]
        for j in [j for j in app_jobs() if j.study == app]:
            out += [f"#### {DATASETS.get(j.dataset, j.dataset)}", ""]
            run = jobs.get(j.id)
            if not run:
                out += [f"Not run: `python benchmarks/run.py apps --only {j.id}`.", ""]
                continue
            r = run[-1]
            out += [globals()[f"_{app}_table"](r), "", f"![{j.id}](img/apps-{j.id}.png)", ""]
    return "\n".join(out)


def _continual_table(r: Row) -> str:
    from datadistill.studies import get_study

    lines = [get_study("continual").format(r)]
    pr = r["protocol"]
    lines += ["", _app_caption(r, f"{r['per_class']} images per class per step, {r['steps']} steps, class orders "
                                  f"{r['orders']} x {r['n_models']} network(s), `{pr['name']}` protocol at "
                                  f"{pr['epochs']} epochs, augment {pr['augment']}; test accuracy (%) on the classes "
                                  f"seen, mean ± std over orders and networks")]
    return "\n".join(lines)


def _nas_table(r: Row) -> str:
    from datadistill.studies import get_study

    lines = [get_study("nas").format(r)]
    pr, fp = r["protocol"], r["full_protocol"]
    lines += ["", _app_caption(r, f"{len(r['architectures'])} ConvNets, {r['per_class']} images per class; proxies "
                                  f"trained `{pr['name']}` {pr['epochs']} epochs"
                                  + (f" at each set's learned lr where it has one (else {pr['lr']})"
                                     if pr.get("use_learned_lr") else "")
                                  + f", the whole data {fp['epochs']} "
                                  f"epoch(s), {fp['n_models']} network(s) per architecture"
                                  + ("" if fp["n_models"] > 1 else ": the reference's agreement with itself across "
                                     "seeds is not measured"))]
    return "\n".join(lines)


def _privacy_table(r: Row) -> str:
    from datadistill.studies import get_study

    lines = [get_study("privacy").format(r)]
    pr = r["protocol"]
    lines += ["", _app_caption(r, f"a pool of {r['pool_per_class']} images per class halved {r['splits']} times "
                                  f"({2 * r['splits']} runs per training set, each half's images its members), "
                                  f"targets {pr['model']} trained `{pr['name']}` {pr['epochs']} epochs; "
                                  "scores pooled over the runs")]
    return "\n".join(lines)


def plot_apps(jobs: dict[str, list[Row]], img: Path) -> None:
    """Each recorded application's picture, drawn again from its record's summary."""
    from datadistill.studies import get_study

    for j in app_jobs():
        run = jobs.get(j.id)
        if run:
            get_study(j.study).plot(run[-1], img / f"apps-{j.id}.png")


FIDELITY = "fidelity-"  # the suites of the newer methods as their authors run them (issue 29)
FIDELITY_TITLES = {
    "fidelity-datm": ("DATM against MTT at equal budget", "methods/datm.md"),
    "fidelity-frepo": ("FRePo on its authors' evaluation", "methods/frepo.md"),
    "fidelity-haba": ("HaBa against MTT on ZCA-whitened data", "methods/haba.md"),
    "fidelity-nas": ("Architecture search against a reference that ranks", "apps.md"),
    "fidelity-rded": ("RDED and random with a fully trained teacher", "methods/rded.md"),
}


def _fidelity_what(job) -> str:
    if job.kind == "distill":
        return f"{job.method}, {DATASETS.get(job.dataset, job.dataset)} {job.ipc}/class, {job.setting}"
    if job.kind == "evaluate":
        return f"the set of `{job.of}`"
    if job.kind == "study":
        return f"{job.study} study, {DATASETS.get(job.dataset, job.dataset)}"
    return f"{job.kind}, {DATASETS.get(job.dataset, job.dataset)}"


def _fidelity_figure(job, rs: list[Row]) -> tuple[str, str, str]:
    """(figure, how it was measured, extra) of a job's latest run."""
    r = rs[-1]
    if job.kind == "teacher":
        return f"{r['test_accuracy']:.2f}", f"{r.get('model', '?')} teacher, test set", ""
    if job.kind == "experts":
        return (f"{r['mean_final_test_acc']:.2f}", f"{r['n_experts']} experts x {r['epochs']} epochs, their mean "
                "final test accuracy", "")
    if job.kind == "study":
        return (f"seed Spearman {r['full_seed_spearman']:.2f}" if "full_seed_spearman" in r else "-",
                f"whole data {r['full_protocol']['epochs']} epoch(s) x {r['full_protocol']['n_models']} seeds", "")
    f = figure(rs) or r
    extra = []
    if job.kind == "distill" and job.method in SOFT_METHODS and not r.get("labels"):
        extra.append("trained on the file's own labels (`labels=auto`)")
    if r.get("storage_ratio") is not None:
        extra.append(f"storage {r['storage_ratio']:.2f}x")
    if r.get("low_pass_hallucinators") is not None:  # HaBa's collapse diagnostic (synset.collapse)
        extra.append(f"low-pass hallucinators {r['low_pass_hallucinators']} of {r.get('n_hallucinators', '?')}, "
                     f"correlation with the base {r.get('hallucination_corr', float('nan')):.2f}")
    return pm(f), _evaluation(r), ", ".join(extra)


def fidelity_section(jobs: dict[str, list[Row]]) -> str:
    """Suites ``fidelity-*``: every job with its latest figure and how it was measured, or "not run"; the
    architecture-search studies as the apps section draws them."""
    out = []
    for path in sorted(SUITES_DIR.glob(f"{FIDELITY}*.yaml")):
        suite = load_suite(path)
        title, page = FIDELITY_TITLES.get(path.stem, (path.stem, "benchmarks.md"))
        out += [f"### {title}", "", f"Suite `{path.stem}` (`python benchmarks/run.py {path.stem}`); the method's "
                f"page says what each job compares and what it found: [{page}]({page}).", ""]
        head = "| job | what | figure (%) | measured | notes | record |"
        lines = [head, "|" + "---|" * (head.count("|") - 1)]
        studies = []
        for j in suite.jobs:
            rs = jobs.get(j.id)
            if not rs:
                lines.append(f"| {j.id} | {_fidelity_what(j)} | not run | | | |")
                continue
            fig, how, extra = _fidelity_figure(j, rs)
            lines.append(f"| {j.id} | {_fidelity_what(j)} | {fig} | {how} | {extra} | "
                         f"[{rs[-1]['file']}:{rs[-1]['line']}](../{link(rs[-1], '')}) |")
            if j.kind == "study" and j.study == "nas":
                studies.append((j, rs[-1]))
        out += lines + [""]
        for j, r in studies:
            out += [f"#### {j.id}", "", _nas_table(r), ""]
    return "\n".join(out)


def claims_table(prefix: str = "../") -> str:
    """Each claim of the suites (a paper's figure) beside ours on the paper's protocol: the difference
    with its standard error, and our budget as a fraction of the paper's iterations."""
    released = {e["job"]: e for e in json.loads((RELEASED_DIR / "index.json").read_text())}
    head = ("| paper | method | dataset | images / class | the paper's figure | protocol | ours on it | ours - paper "
            "| our iterations / the paper's | our set | machine | commit |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for path in sorted(SUITES_DIR.glob("*.yaml")):
        suite = load_suite(path)
        for cc in check_claims(suite):
            c = cc.claim
            paper = f"{c.value:g}" + (f" ± {c.std:g}" if c.std is not None else "") + (f" (n {c.n})" if c.n else "")
            job = suite.job(c.job) if c.job else None
            src = released.get(job.of.split(":")[-1]) if job is not None and job.of else None
            our_set = f"[{Path(src['file']).name}]({prefix}{src['file']})" if src else (
                f"made by `{c.job}`" if job is not None and job.kind == "distill" else "-")
            if cc.ours is None:
                why = c.note or f"not run: `python benchmarks/run.py {suite.name} --only {c.job}`"
                lines.append(f"| {c.paper}, {c.table} | {c.method} | {DATASETS.get(c.dataset, c.dataset)} | {c.ipc} "
                             f"| {paper} | `{c.protocol}` | {why} | | | {our_set} | | |")
                continue
            r = cc.ours["latest"]
            row = Row(r)
            at = _line_of(r, suite, job)
            ours = f"{cc.ours['acc_mean']:.2f} ± {cc.ours['acc_std']:.2f} ({cc.ours['n_models']} models" + (
                f", {cc.ours['n_runs']} runs)" if cc.ours["n_runs"] > 1 else ")")
            ours = f"[{ours}]({prefix}benchmarks/results/{at})" if at else ours
            budget = (f"{cc.our_iterations} / {c.iterations} = {cc.budget:.3g}" if cc.budget is not None
                      else ("selection" if c.method in SELECTIONS else "-"))
            lines.append(f"| {c.paper}, {c.table} | {c.method} | {DATASETS.get(c.dataset, c.dataset)} | {c.ipc} "
                         f"| {paper} | `{cc.protocol_used}` | {ours} | {cc.diff:+.2f} ± {cc.se:.2f} | {budget} "
                         f"| {our_set} | {row.get('device', '?')} | {row.get('commit', '?')} |")
    return "\n".join(lines)


def _line_of(rec: dict, suite, job) -> str | None:
    """``FILE#LN`` of a record in its job's records file."""
    from suites import results_path

    path = results_path(job)
    for n, r in enumerate(read_records(path), 1):
        if r == rec:
            return f"{path.name}#L{n}"
    return None


def cost_records() -> list[Row]:
    out = []
    for n, r in enumerate(read_records(RESULTS_DIR / COST), 1):
        row = Row(r)
        row["file"], row["line"] = COST, n
        out.append(row)
    return out


def cost_table(rows: list[Row], prefix: str = "../") -> str:
    """Per suite and device, the latest extrapolation of each job (`benchmarks/paper_cost.py`): its
    measured unit times, its hours of distillation, experts and evaluation, and the suite's total."""
    if not rows:
        return ("No records yet: `python benchmarks/paper_cost.py` measures them (on a GPU node: "
                "`--device cuda`).")
    latest = {(r["suite"], r["device"], r["job"]): r for r in rows}
    head = ("| job | measured on this device | distillation h | experts h | evaluation h | node-hours | k | CPU path "
            "| commit | record |")
    tables = []
    for suite, device in dict.fromkeys(key[:2] for key in latest):
        rs = [r for key, r in latest.items() if key[:2] == (suite, device)]
        lines = [f"### {suite} on {device}", "", head, "|" + "---|" * (head.count("|") - 1)]
        for r in rs:
            if r["kind"] == "experts":
                unit = f"{r['seconds_per_expert_epoch']:.3g} s / expert epoch x {r['n_experts']} x {r['expert_epochs']}"
            else:
                evals = "; ".join(f"{r['eval_n_models']} {m} x ({e} epochs x {s:.3g} s + {f:.3g} s)" for m, e, s, f in
                                  zip(r["eval_models"], r["eval_epochs"], r["eval_seconds_per_epoch"],
                                      r["eval_fixed_seconds"]))
                unit = f"{r['seconds_per_iteration']:.3g} s / it x {r['iterations']}; evaluation {evals}"
            lines.append(f"| {r['job']} | {unit} | {r['distill_hours']:.3g} | {r['experts_hours']:.3g} "
                         f"| {r['eval_hours']:.3g} | **{r['node_hours']:.3g}** | {r['k']} | {r['capability']} "
                         f"| {r['commit']} | [{r['file']}:{r['line']}]({link(r, prefix)}) |")
        total = {h: sum(r[h] for r in rs) for h in ("distill_hours", "experts_hours", "eval_hours", "node_hours")}
        lines.append(f"| **total** ({len(rs)} jobs) | | {total['distill_hours']:.3g} | {total['experts_hours']:.3g} "
                     f"| {total['eval_hours']:.3g} | **{total['node_hours']:.3g}** | | | | |")
        tables.append("\n".join(lines))
    return "\n\n".join(tables)


def parity_table(rows: list[Row]) -> str:
    lines = ["| anchor set | preset | epochs | models | ours | 95% interval | the reference evaluator | agreement "
             "| machine | CPU path | commit | command |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        a = r.get("agreement") or {}
        agree = (f"{'yes' if a['agree'] else '**no**'}: {a['diff']:+.2f} vs 2 x {a['combined_se']:.2f} "
                 f"(Welch p {a['welch_p']:.2f})") if a else "not stated"
        lines.append(f"| {r['anchor']} | `{r['preset']}` | {r['epochs']} | {r['n_models']} "
                     f"| {r['acc_mean']:.2f} ± {r['acc_std']:.2f} | {r['ci95'][0]:.2f} - {r['ci95'][1]:.2f} "
                     f"| {r['reference_mean']:.2f} ± {r['reference_std']:.2f} ({len(r['reference_accs'])} models) "
                     f"| {agree} | {r['device']} | {r['capability']} | {r['commit']} | `{r['command']}` |")
    return "\n".join(lines)


def released_table() -> str:
    index = RELEASED_DIR / "index.json"
    if not index.is_file():
        return "No released sets."
    lines = ["| file | method | dataset | IPC | accuracy (%) | job | record |", "|---|---|---|---|---|---|---|"]
    for e in json.loads(index.read_text()):
        lines.append(f"| [{Path(e['file']).name}](../{e['file']}) | {e['method']} | {DATASETS.get(e['dataset'])} "
                     f"| {e['ipc']} | {e['acc_mean']:.2f} ± {e['acc_std']:.2f} | {e['job']} "
                     f"| [{e['record']}](../{e['record'].replace(':', '#L')}) |")
    return "\n".join(lines)


def render(rows: list[Row]) -> str:
    suites = suite_of()
    jobs = latest_per_job(rows)
    main_md, main_rows = main_tables(jobs, suites)
    dd_md, dd_rows = dd_table(jobs)
    xa_md, xa_rows = xarch_table(jobs, suites)
    ba_md, ba_rows = bases_table(jobs)
    ex_md, ex_rows = experts_table(jobs)
    speed = [r for r in rows if r["file"] == "speed.jsonl"]
    memory = [r for r in rows if r["file"] == "dd_memory.jsonl"]
    parity = [r for r in rows if r["file"] == "parity.jsonl"]
    executor = [r for r in rows if r["file"] == "executor.jsonl"]
    batched = [r for r in rows if r["file"] == "batched_eval.jsonl"]
    parts = [
        f"<!-- generated by `{COMMAND}` from benchmarks/results/*.jsonl: "
        "edit the records or the script, not this file -->",
        "# Results",
        "",
        f"This page is generated by `{COMMAND}` (also `make bench-table`) from the records in "
        "`benchmarks/results/*.jsonl`. Each row is the latest record of one job of a suite in "
        "`benchmarks/suites/`; `python benchmarks/run.py SUITE --only JOB --rerun` reruns it, and "
        "`python benchmarks/run.py SUITE --check` compares every record with its expected figure. "
        "Budgets are CPU budgets, far below the papers' GPU budgets: these figures are not the papers'.",
        "",
        "## The methods on one protocol",
        "",
        "One figure per method and column, every column on one protocol: the released set's job "
        "([below](#released-distilled-sets)), or for RDED, DATM and FRePo the soft suite's score of the set with "
        "its own labels; a job's figure is its latest record, or the pool of its reruns with their count. The "
        "papers' figures are compared on the papers' protocols in the claims table below, never here.",
        "",
        methods_table(rows, prefix="../"),
        "",
        "![accuracy vs images per class](img/acc_vs_ipc.png)",
        "",
        "## Claims: the papers' figures on their own protocols",
        "",
        "Each paper figure the docs compare with is a claim in a suite (`claims:` of "
        "`benchmarks/suites/paper.yaml`), beside our set scored on the evaluation protocol that reproduces the "
        "paper's (`dc-paper`, `dsa-paper` = `dm-paper`: the authors' evaluators, see [evaluation](evaluation.md)). "
        "A claim with a metric other than accuracy names it in its table cell. `ours - paper` is the difference with its standard error (ours: std / sqrt(models); the paper's std / "
        "sqrt(n) where the paper states n); the budget column is our distillation iterations over the paper's "
        "(our sets are distilled on 2 CPU cores). `python benchmarks/run.py paper --check` prints the same.",
        "",
        claims_table(),
        "",
        "## Soft labels and what a set adds",
        "",
        "Suite `soft`: every set trained on with its own labels (hard, its stored soft labels, or a teacher "
        "relabelling every batch), next to a random real subset of the same size under the same protocol and "
        "labels, and DD-Ranking's scores ([evaluation](evaluation.md#scores-what-a-set-adds)): IOR = accuracy - "
        "random subset; HLR = whole data - the set with hard labels (lower is better); LRS in [0, 1] from both. "
        "The whole-data reference is the `cpu` suite's 2-epoch record. Beside each figure: its evaluation "
        "protocol and epochs, the teacher when one relabels the batches (its test accuracy and the first digits of "
        "its file's sha256: rows with other digits had another teacher), the set's storage "
        "(stored floats, label vectors and a learned lr included, over a plain set's at the same images per class; "
        "from its distillation's record) and its budget (iterations, unrolled steps per segment, experts and their "
        "epochs). Rows differ in budget: compare methods at equal budget only where these columns agree. "
        "`s / it` and `distill wall` are the distillation's (blank for selections); `scores wall` is the three "
        "evaluations'.",
        "",
        soft_table(jobs),
        "## What distilled sets are for",
        "",
        "Suite `apps` ([applications](apps.md)): the released DM, MTT and herding sets at 10 images per class and "
        "the random baseline as a continual-learning memory, as a proxy for ranking architectures, and under a "
        "membership-inference attack. CPU budgets, far below the papers' (the suite file names each one).",
        "",
        apps_section(jobs),
        "## Fidelity: the newer methods as their authors run them",
        "",
        "The `fidelity-*` suites (issue 29): HaBa, DATM, FRePo and RDED with their authors' inputs, settings and "
        "evaluation, each beside the method it claims to beat at equal budget, and the architecture-search study "
        "against a whole-data reference whose ranking is measured against itself. Their records stay out of the "
        "one-protocol tables above. A job without a record says \"not run\": these suites run in the background "
        "one session after another (their cost is in each suite file).",
        "",
        fidelity_section(jobs),
        "## Parity with the authors' evaluators",
        "",
        "One set scored by the authors' own evaluator (their released code, run beside ours; the first row: a set "
        "they distilled and scored) and by our paper preset (`benchmarks/parity.py`; population std, a 95% "
        "Student-t interval of our mean). Agreement: the difference of the means within two combined standard "
        "errors (`tests/test_parity_records.py` checks every record against it).",
        "",
        parity_table(parity) if parity else "No records yet.",
        "",
        "## ConvNet evaluation (`dc` protocol), every job",
        "",
        "Fresh ConvNets trained on the set (300 epochs, no augmentation; MTT and HaBa at the set's learned "
        "step size), final test accuracy. `s / it` is seconds per distillation iteration.",
        "",
        main_md,
        "",
        commands(main_rows, suites),
        "",
        "## Dataset Distillation (LeNet)",
        "",
        "Every setting of Wang et al. (2018) beside real-image baselines under the same steps and epochs; "
        "baselines learn only the step sizes (`learned`) or use one step size chosen on 10,000 training "
        "images (`fixed`).",
        "",
        dd_md,
        "",
        commands(dd_rows, suites),
        "",
        "## Cross-architecture",
        "",
        "Distilled sets evaluated on networks they were not distilled for: 5 fresh networks, `dc` protocol, "
        "the fixed rate 0.01 for every set. The RMS is that of the set's training examples in the normalized "
        "space (real data: about 1).",
        "",
        xa_md,
        "",
        commands(xa_rows, suites),
        "",
        "## HaBa: the bases alone",
        "",
        "A HaBa set's bases evaluated as a plain image set (same labels, same learned step size).",
        "",
        ba_md,
        "",
        commands(ba_rows, suites),
        "",
        "## Expert trajectories (MTT, HaBa)",
        "",
        ex_md,
        "",
        commands(ex_rows, suites),
        "",
        "## The README's commands, timed",
        "",
        "`make distill` and `make test` on a fresh clone, phase by phase, by `python benchmarks/main_job.py` "
        "(`--what test`; `--avx2` forces PyTorch's AVX2 path): the latest record per CPU and path.",
        "",
        main_job_text(rows, prefix="../"),
        "",
        "## Speed",
        "",
        "One DM or DC iteration against its floor (its floating-point work at the machine's fp32 "
        "matrix-multiply rate, measured in the same run), by `make bench-speed`.",
        "",
        speed_table(speed) if speed else "No records.",
        "",
        "### The evaluator",
        "",
        "A training step of a fresh ConvNet (forward, backward, update) and the test pass against their "
        "floors, and one whole 300-epoch `dsa-paper` model of a 100-image set, by "
        "`python benchmarks/speed_eval.py`.",
        "",
        eval_speed_table(speed),
        "",
        "Where a training step's or a DC iteration's time goes (share of its CPU time) and the convolutions' own "
        "floor ratio, by `python benchmarks/speed_breakdown.py [--what dc1]`:",
        "",
        breakdown_table(speed),
        "",
        "## Parallel execution",
        "",
        "The same grid in this process and on a local Ray cluster of one-thread workers, timed end to end "
        "(start-up, tasks and result files included) by `python benchmarks/executor_overhead.py`; "
        "`same results`: the accuracies equal those of the one-thread serial run ([parallel work](parallel.md)).",
        "",
        executor_table(executor),
        "",
        "### Batched evaluation",
        "",
        "N fresh models trained on one set as one vmapped computation (`datadistill evaluate --batch-models N`) "
        "against one after another, in one run, by `python benchmarks/batched_eval.py`.",
        "",
        batched_table(batched),
        "",
        "## Cost of the papers' budgets",
        "",
        "Node-hours of each job at its whole budget (suite `paper-budget`: the papers' own iterations, expert "
        "trajectories and evaluations), **extrapolated** from a few iterations, expert epochs and evaluation epochs "
        "timed by `python benchmarks/paper_cost.py` (each record names its `k`): one table per suite and device, the "
        "latest record per job. Running the suite on a cluster: [cluster](cluster.md).",
        "",
        cost_table(cost_records()),
        "",
        "## Memory of Dataset Distillation's unrolled steps",
        "",
        memory_table(memory) if memory else "No records.",
        "",
        "## Released distilled sets",
        "",
        "The best recorded set per (method, dataset, images per class), loadable with "
        "`datadistill evaluate FILE` or `datadistill.load_synset(FILE)`; other sets are rebuilt by their job.",
        "",
        released_table(),
        "",
    ]
    return "\n".join(parts)


def plot(rows: list[Row], out: Path) -> None:
    from datadistill.viz import plot_acc_vs_ipc

    top = [{**f, "acc_std": f["acc_std"]} for (m, ds, ipc), f in headline(rows).items()
           if ds in ("mnist", "fashion_mnist")]
    # the series that train on other labels than the set's classes say so, as the table's labels column
    legend = {f["method"]: f"{f['method']} ({PLOT_LABELS[f['row'].get('labels')]})" for f in top
              if f["row"].get("labels") in PLOT_LABELS}
    plot_acc_vs_ipc(top, out, title=f"ConvNet test accuracy on the `{TABLE_PROTOCOL}` protocol (300 epochs, no "
                                    "augmentation): the methods table's figures", names=DATASETS, legend=legend)


PLOT_LABELS = {"teacher": "teacher's labels", "soft": "learned soft labels"}


README = ROOT / "README.md"
TABLE_START, TABLE_END = "<!-- methods-table: written by `python benchmarks/report.py` -->", "<!-- /methods-table -->"


def readme_with_table(rows: list[Row], text: str) -> str:
    """README.md's text with the methods table between its markers replaced by today's."""
    if TABLE_START not in text or TABLE_END not in text:
        raise SuiteError(f"README.md lacks the markers {TABLE_START} ... {TABLE_END}")
    head, rest = text.split(TABLE_START, 1)
    return head + TABLE_START + "\n" + methods_table(rows) + "\n" + TABLE_END + rest.split(TABLE_END, 1)[1]


MAIN_START = "<!-- main-job: written by `python benchmarks/report.py` from benchmarks/results/main_job.jsonl -->"
MAIN_END = "<!-- /main-job -->"


def _duration(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m} min {s} s" if m else f"{s} s"


def main_job_records(rows: list[Row]) -> list[Row]:
    """The latest complete (not smoke) record of `benchmarks/main_job.py` per command, CPU, path and forcing."""
    latest: dict[tuple, Row] = {}
    for r in rows:
        if r["file"] == "main_job.jsonl" and r.get("ok") and not r.get("smoke"):
            latest[(r["what"], r.get("cpu"), r.get("capability"), json.dumps(r.get("env") or {}))] = r
    return sorted(latest.values(), key=lambda r: (r["what"] != "distill", r.get("capability"), r.get("cpu")))


def main_job_text(rows: list[Row], prefix: str = "") -> str:
    """One bullet per timed run of the README's commands (`benchmarks/main_job.py`), from its record."""
    recs = main_job_records(rows)
    if not recs:
        return "- Not timed yet: `python benchmarks/main_job.py` (and `--what test`) records it."
    out = []
    for r in recs:
        forced = " forced" if r.get("env") else ""
        where = (f"on {r.get('cpu')} ({r.get('cpus', '?')} CPUs, PyTorch's {r.get('capability')} path{forced}), "
                 f"commit {r['commit']}, dependency cache {r.get('venv_cache')}"
                 + (f", kernel build cache {r['kernel_cache']}" if "kernel_cache" in r else ""))
        idle = "" if r.get("idle_before") else f", load average {r['load_before'][0]:.2f} before the start"
        rec = f"[record]({prefix}benchmarks/results/main_job.jsonl#L{r['line']})"
        if r["what"] == "distill":
            out.append(f"- `make distill` {where}, MNIST {'already prepared' if r.get('mnist_cached') else 'fetched'}"
                       f"{idle}: **{_duration(r['total_seconds'])}** in all; {r['iterations']} DM iterations in "
                       f"{_duration(r['iteration_seconds'])} ({r['seconds_per_iteration']:.2f} s each), then "
                       f"{r['n_models']} ConvNets in {_duration(r['evaluation_seconds'])}; it reported "
                       f"**{r['acc_mean']:.2f} ± {r['acc_std']:.2f}%** ({rec}).")
        else:
            out.append(f"- `make test` {where}{idle}: **{_duration(r['total_seconds'])}** in all ({rec}).")
    return "\n".join(out)


def readme_with_main_job(rows: list[Row], text: str) -> str:
    if MAIN_START not in text or MAIN_END not in text:
        return text
    head, rest = text.split(MAIN_START, 1)
    return head + MAIN_START + "\n" + main_job_text(rows) + "\n" + MAIN_END + rest.split(MAIN_END, 1)[1]


def write_readme_table(rows: list[Row]) -> None:
    text = README.read_text()
    new = readme_with_main_job(rows, readme_with_table(rows, text))
    if new != text:
        atomic_write_text(README, new)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods-table", action="store_true",
                   help="print the methods table (links from the repository root)")
    p.add_argument("--link-prefix", default="", help="prefix of the record links of --methods-table and --cost-table")
    p.add_argument("--cost-table", action="store_true",
                   help="print the node-hours table of benchmarks/results/paper_cost.jsonl (paper_cost.py's records)")
    p.add_argument("--check", action="store_true",
                   help="exit 1 when docs/results.md differs from what the records give")
    p.add_argument("--out", type=Path, default=DOC, help="the page to write (default %(default)s)")
    a = p.parse_args(argv)
    try:
        rows = records()
        if a.methods_table:
            print(methods_table(rows, a.link_prefix))
            return 0
        if a.cost_table:
            print(cost_table(cost_records(), a.link_prefix))
            return 0
        text = render(rows)
    except SuiteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.check:
        same = a.out.is_file() and a.out.read_text() == text
        print(f"{a.out}: {'up to date' if same else f'out of date, run `{COMMAND}`'}")
        readme = README.read_text()
        same_readme = readme_with_main_job(rows, readme_with_table(rows, readme)) == readme
        if not same_readme:
            print(f"README.md: its methods table is out of date, run `{COMMAND}`")
        return 0 if same and same_readme else 1
    atomic_write_text(a.out, text)
    if a.out == DOC:
        write_readme_table(rows)
    plot(rows, a.out.parent / "img" / PLOT.name)
    plot_apps(latest_per_job(rows), a.out.parent / "img")
    print(f"wrote {a.out} and {a.out.parent / 'img' / PLOT.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
