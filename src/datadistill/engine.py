"""The outer loop of a distillation run: iterate the method, evaluate on a schedule, checkpoint,
resume, and write the run directory. The method is reached only through its registry entry and
the `MethodHooks` (evaluation networks, file metadata, final metrics).

Around the loop, each in its own module: config resolution and up-front checks (`resolve`), the
run folder and its lock (`rundir`), ``report.md`` (`report`), devices (`device`), atomic writes
(`fileio`).

Run directory: ``config.yaml`` (resolved), ``metrics.jsonl``, ``checkpoint.pt``,
``distilled.safetensors``, ``grid.png``, ``loss.png``, ``report.md``, and ``final/`` (one JSON per
network of the final evaluation, so that a run stopped during a long evaluation resumes at the next
network, not at the first).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import yaml
from tqdm.auto import tqdm

from .config import RunConfig
from .data import LoadedDataset
from .device import device_name, peak_memory_mb
from .evaluation import EvalProtocol, EvalReport, evaluate
from .evaluation.evaluator import n_networks, network_row
from .fileio import append_jsonl, atomic_write, atomic_write_text, read_jsonl
from .methods import Context, DivergenceError, OneShot, Selected
from .paths import check_output_dir, missing_dirs, remove_empty_dirs
from .report import run_report
from .resolve import Checked, Resolved, check_run, saved_config
from .rundir import RunDirError, discard_failed_run, prepare_run_dir, run_dir_lock
from .seeding import make_generator
from .synset import PixelSet, save_synset
from .version import git_commit
from .viz import plot_metrics, save_grid

CHECKPOINT = "checkpoint.pt"
DISTILLED = "distilled.safetensors"
FINAL = "final"


def init_synset(res: Resolved, data: LoadedDataset, seed: int) -> Any:
    """The set a run starts from (a one-shot method's whole result: `select_set`)."""
    return select_set(res, data, seed).synset


def select_set(res: Resolved, data: LoadedDataset, seed: int) -> Selected:
    """The set a run starts from, with what its file records about it: a one-shot method's choice
    (``MethodEntry.select``), else the method's initialization (its ``synset`` factory, real images
    or noise)."""
    g = make_generator(seed, "init")
    if res.entry.select is not None:
        return res.entry.select(res.method_cfg, data, res.cfg.ipc, res.image_init, g)
    return Selected(_initial_set(res, data, g))


def _initial_set(res: Resolved, data: LoadedDataset, g: torch.Generator) -> Any:
    if res.entry.synset is not None:
        return res.entry.synset(res.method_cfg, data, res.cfg.ipc, res.image_init, g)
    if res.image_init == "real":
        return PixelSet.from_real(data.train, res.cfg.ipc, g)
    return PixelSet.from_noise(data.spec, res.cfg.ipc, g)


@dataclass
class RunResult:
    out: Path
    synset: Any
    data: LoadedDataset
    reports: dict[str, EvalReport]
    iterations: int
    seconds_per_iteration: float
    wall_seconds: float
    peak_mem_mb: float
    device: torch.device
    extra: dict[str, Any] | None = None  # a method's further final numbers (`MethodHooks.final_metrics`)


def run(
    cfg: RunConfig,
    out: str | Path,
    *,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
    callbacks: Sequence[Any] = (),
    log=print,
) -> RunResult | None:
    """Run a distillation end to end. ``stop_after`` stops (as if interrupted) after that many
    iterations of this call, leaving a checkpoint; returns ``None`` then. The run directory is
    locked for the duration (`run_dir_lock`): a second process asking for it gets `RunDirError`.

    Bad input never leaves a half-made run: everything that can be checked before the run starts
    (`check_run`, and that ``out`` can be written) is checked before the folder is created; a fresh
    run that fails later without having written a checkpoint removes what it wrote
    (`discard_failed_run`), and the folders above ``out`` that it created."""
    t_run = time.perf_counter()
    out = Path(out)
    if resume and (out / "config.yaml").is_file():
        cfg = saved_config(cfg, out, log)
    checked = check_run(cfg)
    check_output_dir(out, "run directory")
    made_above = missing_dirs(out.parent)  # the lock, beside the folder, creates them
    try:
        with run_dir_lock(out):
            return _run(checked, out, resume=resume, force=force, progress=progress, stop_after=stop_after,
                        callbacks=callbacks, log=log, t_run=t_run)
    except BaseException:
        remove_empty_dirs(made_above)
        raise


def _run(checked: Checked, out: Path, *, resume: bool, force: bool, progress: bool, stop_after: int | None,
         callbacks: Sequence[Any], log, t_run: float) -> RunResult | None:
    fresh, made = prepare_run_dir(out, resume=resume, force=force)
    try:
        return _distill(checked, out, resume=resume, progress=progress, stop_after=stop_after, callbacks=callbacks,
                        log=log, t_run=t_run)
    except BaseException:
        if fresh and not (out / CHECKPOINT).exists():  # nothing to resume: no half-made run is left
            discard_failed_run(out, made)
        raise


def _distill(checked: Checked, out: Path, *, resume: bool, progress: bool, stop_after: int | None,
             callbacks: Sequence[Any], log, t_run: float) -> RunResult | None:
    res, device, data = checked.res, checked.device, checked.data
    cfg = res.cfg
    atomic_write_text(out / "config.yaml", yaml.safe_dump(res.to_dict(), sort_keys=False))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    if device.type != "cpu":  # the training images go to the device once, not batch by batch
        data = dataclasses.replace(data, train=data.train.to(device), test=data.test.to(device))
    chosen = select_set(res, data, cfg.seed)
    synset = chosen.synset.to(device)
    ctx = Context(data=data, synset=synset, device=device, generator=make_generator(cfg.seed, "method"),
                  seed=cfg.seed, ipc=cfg.ipc, iterations=res.iterations, data_root=cfg.data_root,
                  dataset_options=dict(cfg.dataset_options))
    method = res.entry.build(res.method_cfg, ctx) if res.entry.build is not None else OneShot(res.entry.name, chosen.meta)
    networks = method.eval_networks()
    start, elapsed = 0, 0.0
    if resume and (out / CHECKPOINT).is_file():
        start, elapsed = _load_checkpoint(out / CHECKPOINT, synset, method, ctx)
        log(f"resuming {out} at iteration {start}/{res.iterations}")
    _truncate_metrics(out / "metrics.jsonl", start)
    if device.type == "cpu" and res.iterations - start > 2000:
        log(f"note: {res.iterations - start} iterations on the CPU will take long; the CPU presets "
            "(e.g. --preset dm-cpu) are sized for 2 cores")

    done_here = 0
    bar = tqdm(range(start, res.iterations), desc=f"{res.entry.name} {cfg.dataset} ipc={cfg.ipc}",
               disable=not progress, initial=start, total=res.iterations)
    for it in bar:
        t0 = time.perf_counter()
        try:
            metrics = method.step(it)
        except DivergenceError as e:  # raised before any update: the current state is the last good one
            bar.close()
            _save_checkpoint(out / CHECKPOINT, synset, method, ctx, it, elapsed)
            raise DivergenceError(f"{e}. The last good state (iteration {it}) is in {out / CHECKPOINT}") from e
        elapsed += time.perf_counter() - t0
        row = {"iteration": it + 1, **metrics, "seconds": elapsed}
        append_jsonl(out / "metrics.jsonl", row)
        bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items()})
        _call(callbacks, "on_step", it + 1, metrics)
        if cfg.eval_every and (it + 1) % cfg.eval_every == 0 and it + 1 < res.iterations:
            rep = evaluate(synset, data, res.protocol.with_(n_models=cfg.eval_models_during), device=device,
                           networks=networks)
            more = method.eval_metrics()  # e.g. HaBa's collapse diagnostic
            append_jsonl(out / "metrics.jsonl", {"iteration": it + 1, "eval": rep.to_dict(),
                                                  **({"set": more} if more else {})})
            bar.write(f"iteration {it + 1}: {rep.summary()}")
            _call(callbacks, "on_eval", it + 1, rep)
        done_here += 1
        last = it + 1 == res.iterations
        if (cfg.checkpoint_every and (it + 1) % cfg.checkpoint_every == 0) or last or done_here == stop_after:
            _save_checkpoint(out / CHECKPOINT, synset, method, ctx, it + 1, elapsed)
        if done_here == stop_after and not last:
            bar.close()
            return None
    bar.close()
    if not (out / CHECKPOINT).is_file():  # no iterations (a coreset): the set is kept for a resumed evaluation
        _save_checkpoint(out / CHECKPOINT, synset, method, ctx, res.iterations, elapsed)

    reports: dict[str, EvalReport] = {}
    for m in res.models:
        rep = final_evaluation(synset, data, res.protocol, m, out / FINAL, device=device, networks=networks,
                               progress=progress)
        reports[m] = rep
        log(f"final accuracy {rep.summary()}")
        _call(callbacks, "on_eval", res.iterations, rep)
    extra = method.final_metrics(synset, data, device)
    for line in res.entry.format_metrics(extra) if extra else []:
        log(line)
    append_jsonl(out / "metrics.jsonl", {"iteration": res.iterations, "final": True,
                                          "eval": {m: r.to_dict() for m, r in reports.items()},
                                          **({"extra": extra} if extra else {})})
    spi = elapsed / max(res.iterations, 1) if res.iterations else 0.0
    peak = peak_memory_mb(device)
    meta = method.file_meta()
    save_synset(out / DISTILLED, synset, data.spec, method=res.entry.name, method_config=dataclasses.asdict(res.method_cfg),
                seed=cfg.seed, iterations=res.iterations, init=res.image_init,
                evaluation={m: r.to_dict() for m, r in reports.items()}, commit=git_commit(),
                protocol=res.protocol.name, seconds_per_iteration=spi, peak_mem_mb=peak, zca=data.zca,
                wall_seconds=time.perf_counter() - t_run, device=device_name(device),
                **({"extra_report": extra} if extra else {}),
                **meta)
    save_grid(synset, data.spec, out / "grid.png", view=data.zca.invert if data.zca is not None else None,
              crops=meta.get("crops"), sources=data.train.images)  # a set of real patches: drawn with its sources
    plot_metrics(out / "metrics.jsonl", out / "loss.png")
    result = RunResult(out, synset, data, reports, res.iterations, spi, time.perf_counter() - t_run, peak, device,
                       extra)
    atomic_write_text(out / "report.md", run_report(res, result))
    _call(callbacks, "on_end", result)
    return result


def final_evaluation(synset: Any, data: LoadedDataset, protocol: EvalProtocol, model: str, folder: Path, *,
                     device: torch.device | str = "cpu", networks: Any = None, progress: bool = False) -> EvalReport:
    """`evaluate` ``model`` on ``synset`` one network at a time, each network's result written to
    ``folder/MODEL-NNN.json`` as it finishes, with a fingerprint of the set, the protocol and the
    model. A result whose fingerprint matches is reused, so a run stopped during its final
    evaluation (a paper protocol trains each network for an hour on 2 cores) resumes at the next
    network. The report equals one `evaluate` call's: network ``i`` has the same seed either way."""
    key = _fingerprint(synset, protocol, model)
    rows = []
    for i in tqdm(range(n_networks(protocol.n_models, networks)), desc=f"evaluate {model}", disable=not progress,
                  leave=False):
        path = folder / f"{model}-{i:03d}.json"
        row = _final_row(path, key)
        if row is None:
            row = {"key": key, **network_row(evaluate(synset, data, protocol, model=model, device=device,
                                                      networks=networks, indices=[i]))}
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(row))
        rows.append(row)
    return EvalReport.from_rows(model, rows)


def _fingerprint(synset: Any, protocol: EvalProtocol, model: str) -> str:
    h = hashlib.sha256(json.dumps({"protocol": protocol.to_dict(), "model": model}, sort_keys=True).encode())
    for name, t in sorted(synset.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu").contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _final_row(path: Path, key: str) -> dict[str, Any] | None:
    """A kept result of the same set, protocol and model, else None (missing, unreadable or stale)."""
    try:
        row = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return row if isinstance(row, dict) and row.get("key") == key else None


def _call(callbacks: Sequence[Any], hook: str, *args: Any) -> None:
    for cb in callbacks:
        fn = getattr(cb, hook, None)
        if fn is not None:
            fn(*args)


def _truncate_metrics(path: Path, start: int) -> None:
    """Drop rows past the checkpoint, so a resumed run logs each iteration once."""
    if not path.is_file():
        return
    keep = [r for r in read_jsonl(path) if r.get("iteration", 0) <= start and not r.get("final")]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))


def _save_checkpoint(path: Path, synset: Any, method: Any, ctx: Context, iteration: int, elapsed: float) -> None:
    state = {"iteration": iteration, "elapsed": elapsed, "synset": synset.state_dict(),
             "method": method.state_dict(), "generator": ctx.generator.get_state()}
    atomic_write(path, lambda p: torch.save(state, p))


def _load_checkpoint(path: Path, synset: Any, method: Any, ctx: Context) -> tuple[int, float]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or not a checkpoint: torch raises several kinds
        raise RunDirError(f"cannot resume: {path} is not a readable checkpoint ({type(e).__name__}); start the run "
                          "over with --force") from e
    synset.load_state_dict(state["synset"])
    method.load_state_dict(state["method"])
    ctx.generator.set_state(state["generator"])
    return int(state["iteration"]), float(state["elapsed"])
