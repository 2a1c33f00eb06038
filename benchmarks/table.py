"""Build the results table (Markdown) and the accuracy-vs-IPC plot from benchmarks/results/*.jsonl,
and write the table into README.md between the `results:start` / `results:end` markers.

    python benchmarks/table.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
START, END = "<!-- results:start -->", "<!-- results:end -->"
DD_START, DD_END = "<!-- dd:start -->", "<!-- dd:end -->"
DD_FILE = "dd_cpu.jsonl"  # Dataset Distillation has its own table (settings, step sizes, before/after)
ABLATION_FILES = {"haba_bases.jsonl"}  # evaluations of parts of a set (benchmarks/haba_bases.py): README prose
XARCH_FILE = "cross_arch.jsonl"  # benchmarks/cross_arch.py: its own table
XARCH_START, XARCH_END = "<!-- xarch:start -->", "<!-- xarch:end -->"
SPEED_FILE = "speed.jsonl"  # benchmarks/speed_dm.py and speed_dc.py (make bench-speed): its own table
SPEED_START, SPEED_END = "<!-- speed:start -->", "<!-- speed:end -->"


def load_records(only: str | None = None) -> list[dict]:
    records = []
    for path in sorted(RESULTS.glob("*.jsonl")):
        if (only is None and path.name in {DD_FILE, XARCH_FILE, SPEED_FILE, *ABLATION_FILES}) or (only is not None and path.name != only):
            continue
        for line in path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                if "acc_mean" in r:  # accuracy records; speed records have their own files and fields
                    records.append(r)
    return records


def table(records: list[dict]) -> str:
    head = ("| dataset | IPC | method | setting | accuracy (%) | models | protocol | iterations | s / iteration "
            "| wall (s) | peak mem (MB) | stored floats | commit |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    order = {"full": -1, "random": 0}
    for r in sorted(records, key=lambda r: (r["dataset"], r["ipc"], order.get(r["method"], 1), r["method"])):
        lines.append(
            f"| {r['dataset']} | {r['ipc'] or 'all'} | {r['method']} | {r['setting']} | {r['acc_mean']:.2f} ± {r['acc_std']:.2f} "
            f"| {r['n_models']} {r['model']} | {r['protocol']} ({r.get('epochs', '?')} ep, {r.get('augment', '?')}) "
            f"| {r['iterations']} | {r['seconds_per_iteration']:.2f} | {r['wall_seconds']:.0f} | {r['peak_mem_mb'] or '-'} "
            f"| {_stored(r)} | {r['commit']} |"
        )
    devices = sorted({r["device"] for r in records})
    commands = []
    for r in records:
        if r["command"] not in commands:
            commands.append(r["command"])
    lines += ["", "Machine: " + "; ".join(devices) + ".", "", "Commands (each record's `command` field):", ""]
    lines += [f"- `{c}`" for c in commands]
    return "\n".join(lines)


def _stored(r: dict) -> str:
    """Floats the distilled set stores (recorded since the MTT/HaBa benchmark); HaBa adds its factorization."""
    if r.get("stored_floats") is None:
        return "-"
    text = f"{r['stored_floats']:,}"
    return text + f" ({_factorization(r)})" if "bases_per_class" in r else text


def _factorization(r: dict) -> str:
    """HaBa's storage split, as its records carry it."""
    return f"{r['bases_per_class']} bases/class + {r['n_hallucinators']} hallucinators"


def _pm(r: dict, key: str) -> str:
    return f"{r[key]:.1f} ± {r[key + '_std']:.1f}" if key in r else "-"


def dd_table(records: list[dict]) -> str:
    head = ("| dataset | IPC | setting | method | step size | test acc. after (%) | eval nets | acc. before (%) "
            "| 0s predicted as 1, before -> after (%) | other classes after (%) | iterations | s / it | wall (s) "
            "| peak mem (MB) | commit |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    settings = ["fixed", "fixed-10k-it", "fixed-anneal", "random", "random-4nets", "poison", "adapt-digits-mnist", "adapt-digits-mnist-40nets",
                "adapt-mnist-digits", "adapt-mnist-digits-40nets"]
    order = {"dd": 0, "random_real": 1, "kmeans": 2, "average": 3}
    for r in sorted(records, key=lambda r: (settings.index(r["setting"]) if r["setting"] in settings else 99,
                                            order.get(r["method"], 9), r.get("step_size", ""))):
        step = r.get("step_size") or "learned"
        if r.get("lr") is not None:
            step += f" ({r['lr']:g})"
        attack = (f"{r['attack_success_before']:.1f} -> {_pm(r, 'attack_success_after')}"
                  if "attack_success_after" in r else "-")
        lines.append(
            f"| {r['dataset']} | {r['ipc']} | {r['setting']} | {r['method']} | {step} "
            f"| **{r['acc_mean']:.2f} ± {r['acc_std']:.2f}** | {r['n_models']} | {_pm(r, 'acc_before')} | {attack} "
            f"| {_pm(r, 'other_acc_after')} | {r['iterations']} | {r['seconds_per_iteration']:.3f} "
            f"| {r['wall_seconds']:.0f} | {r['peak_mem_mb']} | {r['commit']} |")
    devices = sorted({r["device"] for r in records})
    lines += ["", "Machine: " + "; ".join(devices) + ".", "", "Commands (each record's `command` field):", ""]
    seen: list[str] = []
    for r in records:
        if r["command"] not in seen:
            seen.append(r["command"])
    lines += [f"- `{c}`" for c in seen]
    return "\n".join(lines)


MTT_FILE = "mtt_cpu.jsonl"
MTT_START, MTT_END = "<!-- mtt:start -->", "<!-- mtt:end -->"


def mtt_table(records: list[dict], experts: list[dict]) -> str:
    """MTT and HaBa beside random and DM at each (dataset, images-per-class budget), with storage."""
    head = ("| dataset | budget: IPC (floats) | method | setting | accuracy (%) | stored floats | s / iteration "
            "| peak mem (MB) | commit |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    order = {"random": 0, "dm": 1, "mtt": 2, "haba": 3}
    rows = [r for r in records if r["method"] in order and r["ipc"] > 0]
    for ds, ipc in sorted({(r["dataset"], r["ipc"]) for r in rows if r["method"] in ("mtt", "haba")}):
        group = sorted((r for r in rows if (r["dataset"], r["ipc"]) == (ds, ipc)),
                       key=lambda r: (order[r["method"]], r.get("iterations", 0), r["setting"]))
        budget = next((r["budget_floats"] for r in group if r.get("budget_floats")), None)
        if budget is None:  # no HaBa row yet: MTT's images plus its one learned step size
            budget = next((r["stored_floats"] - 1 for r in group if r["method"] == "mtt" and r.get("stored_floats")),
                          None)
        for r in group:
            name = f"{r['method']} ({_factorization(r)})" if "bases_per_class" in r else r["method"]
            # random and DM are plain image sets: they store exactly the budget
            stored = r.get("stored_floats") or (budget if r["method"] in ("random", "dm") else None)
            lines.append(f"| {ds} | {ipc} ({f'{budget:,}' if budget else '?'}) | {name} | {r['setting']} "
                         f"| {r['acc_mean']:.2f} ± {r['acc_std']:.2f} | {f'{stored:,}' if stored else '-'} "
                         f"| {r['seconds_per_iteration']:.2f} | {r['peak_mem_mb'] or '-'} | {r['commit']} |")
    for e in experts:
        lines += ["", f"Experts ({e['dataset']}): {e['n_experts']} x {e['epochs']} epochs, "
                      f"{e['seconds_per_expert_epoch']:.0f} s per expert epoch ({e['device']}), final test accuracy "
                      f"{e['mean_final_test_acc']:.2f}%, commit {e['commit']}: `{e['command']}`."]
    return "\n".join(lines)


def xarch_table(xarch: list[dict], records: list[dict]) -> str:
    """One row per distilled set: its accuracy on each network of cross_arch.jsonl, beside the ConvNet
    accuracy of its own record (the set's name is ``method-dataset-ipcN-setting``)."""
    rows = [r for r in xarch if not r.get("overrides")]
    models = list(dict.fromkeys(r["model"] for r in rows))
    own = {f"{r['method']}-{r['dataset']}-ipc{r['ipc']}-{r['setting']}": r for r in records if "method" in r}
    head = ("| distilled set | ConvNet (its row above) | " + " | ".join(f"{m} (lr 0.01)" for m in models)
            + " | RMS of its examples | commit |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for src in dict.fromkeys(r["source"] for r in rows):
        name = Path(src).stem
        by_model = {r["model"]: r for r in rows if r["source"] == src}
        conv = own.get(name)
        first = next(iter(by_model.values()))
        commits = ", ".join(dict.fromkeys(r["commit"] for r in by_model.values()))
        cells = [f"{conv['acc_mean']:.2f}" if conv else "-"]
        cells += [f"{by_model[m]['acc_mean']:.2f} ± {by_model[m]['acc_std']:.2f}" if m in by_model else "-"
                  for m in models]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {first['input_rms']:,.1f} | {commits} |")
    return "\n".join(lines)


def speed_table(rows: list[dict]) -> str:
    """The latest record per (benchmark, images per class, CPU capability, device)."""
    latest: dict[tuple, dict] = {}
    for r in rows:
        latest[(r["benchmark"], r["ipc"], r["capability"], r["device"])] = r
    lines = ["| iteration | CPU path | matmul GFLOP/s | GFLOP | floor s | ours s | ours / floor | reference loop s "
             "| ours vs reference | device | commit |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(latest.values(), key=lambda r: (r["benchmark"], r["ipc"], r["capability"])):
        what = f"{r['benchmark'].split('_')[0].upper()} MNIST {r['ipc']}/class"
        lines.append(f"| {what} | {r['capability']} | {r['matmul_gflops']:.0f} | {r['gflop']:,.0f} | {r['floor_s']:.2f} "
                     f"| {r['ours_s']:.2f} | **{r['ours_over_floor']:.2f}x** | {r['reference_loop_s']:.2f} "
                     f"| {r['speedup_vs_reference_loop']:.2f}x faster | {r['device']} | {r['commit']} |")
    return "\n".join(lines)


def _replace(body: str, start: str, end: str, text: str) -> str:
    if start in body and end in body:
        pre, rest = body.split(start, 1)
        _, post = rest.split(end, 1)
        return pre + start + "\n" + text + "\n" + end + post
    return body


def main() -> int:
    dd = load_records(DD_FILE)
    if dd:
        text = dd_table(dd)
        (RESULTS / "dd_table.md").write_text(text + "\n")
        readme = ROOT / "README.md"
        readme.write_text(_replace(readme.read_text(), DD_START, DD_END, text))
        print(text)
    records = load_records()
    if any(r["method"] in ("mtt", "haba") for r in records):
        mtt_path = RESULTS / MTT_FILE
        rows = [json.loads(x) for x in mtt_path.read_text().splitlines() if x.strip()] if mtt_path.is_file() else []
        experts = [r for r in rows if r.get("what") == "experts"]
        readme = ROOT / "README.md"
        readme.write_text(_replace(readme.read_text(), MTT_START, MTT_END, mtt_table(records, experts)))
    speed_path = RESULTS / SPEED_FILE
    if speed_path.is_file():
        rows = [json.loads(x) for x in speed_path.read_text().splitlines() if x.strip()]
        readme = ROOT / "README.md"
        readme.write_text(_replace(readme.read_text(), SPEED_START, SPEED_END, speed_table(rows)))
    xarch = load_records(XARCH_FILE)
    if xarch:
        readme = ROOT / "README.md"
        readme.write_text(_replace(readme.read_text(), XARCH_START, XARCH_END, xarch_table(xarch, records)))
    if not records:
        print("no records in benchmarks/results/", file=sys.stderr)
        return 1
    text = table(records)
    (RESULTS / "table.md").write_text(text + "\n")
    sys.path.insert(0, str(ROOT / "src"))
    from datadistill.viz import plot_acc_vs_ipc

    plot_acc_vs_ipc(records, RESULTS / "acc_vs_ipc.png", title="ConvNet test accuracy, CPU budget")
    readme = ROOT / "README.md"
    readme.write_text(_replace(readme.read_text(), START, END, text))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
