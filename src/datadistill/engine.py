"""The outer loop of a distillation run: resolve the config, iterate the method, evaluate on a
schedule, checkpoint, resume, and write the run directory.

Run directory: ``config.yaml`` (resolved), ``metrics.jsonl``, ``checkpoint.pt``,
``distilled.safetensors``, ``grid.png``, ``loss.png`` and ``report.md``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import yaml
from tqdm.auto import tqdm

from .config import ConfigError, RunConfig, from_dict, load_yaml
from .data import LoadedDataset, load_dataset
from .device import device_name, peak_memory_mb, pick_device  # noqa: F401  (pick_device: also its old home)
from .evaluation import EvalProtocol, EvalReport, evaluate, format_table, get_protocol
from .fileio import atomic_write, atomic_write_text
from .methods import METHODS, Context, MethodEntry
from .methods.base import DivergenceError
from .paths import check_output_dir, missing_dirs, remove_empty_dirs
from .registry import UnknownNameError
from .seeding import make_generator
from .synset import PixelSet, save_synset
from .version import git_commit

CHECKPOINT = "checkpoint.pt"
DISTILLED = "distilled.safetensors"


class RunDirError(FileExistsError):
    """The run directory exists and neither --resume nor --force was given."""


@dataclass
class Resolved:
    """A `RunConfig` with every default filled in and every name validated."""

    cfg: RunConfig
    entry: MethodEntry
    method_cfg: Any
    protocol: EvalProtocol
    iterations: int
    init: str
    models: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        d = self.cfg.to_dict()
        d.update(method=self.entry.name, iterations=self.iterations, init=self.init, models=list(self.models),
                 method_config=dataclasses.asdict(self.method_cfg), eval=self.protocol.to_dict())
        d["eval"]["preset"] = d["eval"].pop("name")
        return d


def resolve(cfg: RunConfig) -> Resolved:
    from .data import DATASETS
    from .models import MODELS

    entry = METHODS.get(cfg.method)
    DATASETS.get(cfg.dataset)
    method_cfg = from_dict(entry.config, cfg.method_config, where=f"method_config ({entry.name})")
    ev = dict(cfg.eval)
    preset = ev.pop("preset", entry.eval_preset)
    protocol = get_protocol(preset, **{k: _tuple(v) for k, v in ev.items()})  # ConfigError names the field
    for name in (protocol.model, *cfg.models, getattr(method_cfg, "model", protocol.model)):
        MODELS.get(name)
    init = cfg.init or entry.init
    if init not in entry.inits:
        raise ConfigError(f"init {init!r} is not an image initialization of {entry.name}; valid: {', '.join(entry.inits)}")
    iterations = entry.iterations if cfg.iterations is None else cfg.iterations  # ranges: RunConfig
    if entry.iterations == 0 and iterations > 0:
        raise ConfigError(f"method {entry.name!r} selects real images and has no iterations; use iterations=0")
    return Resolved(cfg, entry, method_cfg, protocol, iterations, init, tuple(cfg.models) or (protocol.model,))


def _tuple(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


@dataclass
class Checked:
    """A run that passed every check that can be made before it starts: its resolved config, the
    device and the training data (loaded and, with ``zca``, whitened, on the CPU)."""

    res: Resolved
    device: torch.device
    data: LoadedDataset


def check_run(cfg: RunConfig) -> Checked:
    """Everything that can be checked before a run starts, before its folder exists: names and
    ranges (`resolve`), the device, the dataset on disk and its options, ZCA, the images per class
    against the smallest class, and the method's own requirements (`MethodEntry.check`: e.g. DD's
    pool folder, MTT's experts). Loads the data the run needs anyway."""
    res = resolve(cfg)
    device = pick_device(cfg.device)
    data = load_dataset(cfg.dataset, cfg.data_root, **cfg.dataset_options)
    if cfg.zca is not None:  # fitted on the training set, applied to train and test (cached per process)
        from .data import whiten_dataset

        data = whiten_dataset(data, cfg.zca)
    check_ipc(cfg.ipc, data)
    if res.entry.check is not None:
        ctx = Context(data=data, synset=None, device=device, generator=make_generator(cfg.seed, "check"),
                      seed=cfg.seed, ipc=cfg.ipc, iterations=res.iterations, data_root=cfg.data_root,
                      dataset_options=dict(cfg.dataset_options))
        res.entry.check(res.method_cfg, ctx)
    return Checked(res, device, data)


def check_ipc(ipc: int, data: LoadedDataset) -> None:
    """A distilled set holds at most as many images per class as the smallest real class has."""
    counts = torch.bincount(data.train.labels.cpu(), minlength=data.spec.num_classes)
    small = int(counts.argmin())
    n = int(counts[small])
    if ipc > n:
        names = data.spec.class_names
        label = f"{small}" + (f" '{names[small]}'" if small < len(names) and names[small] != str(small) else "")
        raise ConfigError(f"ipc {ipc} is more than the smallest class of {data.spec.name} has ({n} images, class "
                          f"{label}); valid: 1..{n}")


def init_synset(res: Resolved, data: LoadedDataset, seed: int) -> Any:
    g = make_generator(seed, "init")
    if res.entry.synset is not None:
        return res.entry.synset(res.method_cfg, data, res.cfg.ipc, res.init, g)
    if res.init == "real":
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
    extra: dict[str, Any] | None = None  # a method's further final numbers (`extra_report`)


def prepare_run_dir(out: Path, *, resume: bool, force: bool) -> tuple[bool, bool]:
    """Make ``out`` ready for the run; returns ``(fresh, made)``: whether the run starts from nothing
    (the folder was missing or empty, or ``force`` emptied it) and whether this call created it."""
    if out.exists() and any(out.iterdir()):
        if resume:
            return False, False
        if not force:
            raise RunDirError(f"run directory {out} already exists; pass --resume to continue it or --force to "
                              "overwrite it")
        shutil.rmtree(out)
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    return True, made


def discard_failed_run(out: Path, made: bool) -> None:
    """Remove what a fresh run wrote before it failed without a checkpoint (its ``config.yaml``,
    ``metrics.jsonl``), and the folder itself if the run created it, so that the next try starts
    anew instead of being asked to ``--resume`` a run that never got anywhere. A fresh run's folder
    held nothing of the user's when it started (it was missing, empty, or emptied by ``--force``)."""
    for p in out.iterdir():
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    if made:
        with contextlib.suppress(OSError):
            out.rmdir()


def _lock_path(out: Path) -> Path:
    return out.parent / f".{out.name}.lock"  # beside the folder: --force empties the folder itself


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


@contextlib.contextmanager
def run_dir_lock(out: Path):
    """Hold ``out`` for this process: a second run (resume or --force) of the same folder is refused
    while the first one's process lives, instead of both writing its checkpoint and files. A lock
    left by a process that died (killed, machine restarted) is taken over."""
    lock = _lock_path(out)
    lock.parent.mkdir(parents=True, exist_ok=True)
    me = f"{os.getpid()} {socket.gethostname()}"
    mine = lock.with_name(f"{lock.name}.{os.getpid()}")
    mine.write_text(me)  # complete before it appears under the lock's name (a hard link is atomic)
    try:
        held = _take(lock, mine, out)
    finally:
        mine.unlink(missing_ok=True)
    try:
        yield
    finally:
        try:
            if held and lock.read_text() == me:
                lock.unlink()
        except OSError:
            pass


def _take(lock: Path, mine: Path, out: Path) -> bool:
    """Link ``mine`` to ``lock``; False (run unlocked) where the file system has no hard links."""
    for _ in range(3):
        try:
            os.link(mine, lock)
            return True
        except FileExistsError:
            try:
                pid_text, _, host = lock.read_text().partition(" ")
                pid = int(pid_text)
            except FileNotFoundError:  # released meanwhile: try again
                continue
            except (OSError, ValueError):  # unreadable or not ours: treat as stale
                pid, host = -1, ""
            if pid > 0 and (host.strip() != socket.gethostname() or _pid_alive(pid)):
                raise RunDirError(f"run directory {out} is in use by process {pid} on {host.strip() or '?'} "
                                  f"(lock {lock}); wait for it to finish or stop it, or delete the lock if that "
                                  "process is gone") from None
            lock.unlink(missing_ok=True)  # stale: its process is gone
        except OSError:  # no hard links here (some network or FAT file systems)
            return False
    raise RunDirError(f"could not lock run directory {out} ({lock} keeps reappearing)")


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
        cfg = _saved_config(cfg, out, log)
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


def _saved_config(cfg: RunConfig, out: Path, log) -> RunConfig:
    """The configuration an interrupted run was started with (a resumed run keeps it)."""
    saved = load_yaml(out / "config.yaml")
    try:
        asked = resolve(cfg).to_dict()
    except (ConfigError, UnknownNameError):
        asked = {}
    differ = sorted(k for k in saved if k in asked and asked[k] != saved[k])
    cfg = from_dict(RunConfig, {k: v for k, v in saved.items() if k in {f.name for f in dataclasses.fields(RunConfig)}},
                    where=str(out / "config.yaml"))
    log(f"resuming with the configuration saved in {out / 'config.yaml'}"
        + (f"; ignoring the requested {', '.join(f'{k}={asked[k]!r}' for k in differ)} (saved: "
           f"{', '.join(f'{k}={saved[k]!r}' for k in differ)}; use --force or another --out to start over)"
           if differ else ""))
    return cfg


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
    synset = init_synset(res, data, cfg.seed).to(device)
    ctx = Context(data=data, synset=synset, device=device, generator=make_generator(cfg.seed, "method"),
                  seed=cfg.seed, ipc=cfg.ipc, iterations=res.iterations, data_root=cfg.data_root,
                  dataset_options=dict(cfg.dataset_options))
    method = res.entry.build(res.method_cfg, ctx)
    eval_init = method.eval_init() if hasattr(method, "eval_init") else None
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
        _append_jsonl(out / "metrics.jsonl", row)
        bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items()})
        _call(callbacks, "on_step", it + 1, metrics)
        if cfg.eval_every and (it + 1) % cfg.eval_every == 0 and it + 1 < res.iterations:
            rep = evaluate(synset, data, res.protocol.with_(n_models=cfg.eval_models_during), device=device,
                           init=eval_init)
            _append_jsonl(out / "metrics.jsonl", {"iteration": it + 1, "eval": rep.to_dict()})
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

    reports: dict[str, EvalReport] = {}
    for m in res.models:
        rep = evaluate(synset, data, res.protocol, model=m, device=device, progress=progress, init=eval_init)
        reports[m] = rep
        log(f"final accuracy {rep.summary()}")
        _call(callbacks, "on_eval", res.iterations, rep)
    extra = method.extra_report(synset, data, device) if hasattr(method, "extra_report") else None
    if extra:
        from .methods.dd import format_before_after

        log("before/after the distilled steps: " + format_before_after(extra))
    _append_jsonl(out / "metrics.jsonl", {"iteration": res.iterations, "final": True,
                                          "eval": {m: r.to_dict() for m, r in reports.items()},
                                          **({"extra": extra} if extra else {})})
    spi = elapsed / max(res.iterations, 1) if res.iterations else 0.0
    peak = peak_memory_mb(device)
    save_synset(out / DISTILLED, synset, data.spec, method=res.entry.name, method_config=dataclasses.asdict(res.method_cfg),
                seed=cfg.seed, iterations=res.iterations, init=res.init,
                evaluation={m: r.to_dict() for m, r in reports.items()}, commit=git_commit(),
                protocol=res.protocol.name, seconds_per_iteration=spi, peak_mem_mb=peak, zca=data.zca,
                wall_seconds=time.perf_counter() - t_run, device=device_name(device),
                **({"extra_report": extra} if extra else {}),
                **(method.file_meta() if hasattr(method, "file_meta") else {}))
    from .viz import plot_metrics, save_grid

    save_grid(synset, data.spec, out / "grid.png", view=data.zca.invert if data.zca is not None else None)
    plot_metrics(out / "metrics.jsonl", out / "loss.png")
    result = RunResult(out, synset, data, reports, res.iterations, spi, time.perf_counter() - t_run, peak, device,
                       extra)
    atomic_write_text(out / "report.md", _report(res, result))
    _call(callbacks, "on_end", result)
    return result


def _call(callbacks: Sequence[Any], hook: str, *args: Any) -> None:
    for cb in callbacks:
        fn = getattr(cb, hook, None)
        if fn is not None:
            fn(*args)


def _append_jsonl(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def _truncate_metrics(path: Path, start: int) -> None:
    """Drop rows past the checkpoint, so a resumed run logs each iteration once."""
    if not path.is_file():
        return
    rows = [(line, json.loads(line)) for line in path.read_text().splitlines() if line]
    keep = [line for line, r in rows if r.get("iteration", 0) <= start and not r.get("final")]
    atomic_write_text(path, "".join(line + "\n" for line in keep))


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


def _extra_lines(extra: dict[str, Any] | None) -> list[str]:
    if not extra:
        return []
    rows = [f"| {k} | {v['mean']:.2f} ± {v['std']:.2f} |" for k, v in extra.items() if isinstance(v, dict)]
    n = extra.get("n_networks", "?")
    return [f"Before/after the distilled steps ({n} evaluation networks, percent):", "", "| metric | value |",
            "|---|---|", *rows, ""]


def _report(res: Resolved, r: RunResult) -> str:
    cfg = res.cfg
    lines = [
        f"# {res.entry.name} on {cfg.dataset}, {cfg.ipc} image(s) per class",
        "",
        f"- iterations: {res.iterations} ({r.seconds_per_iteration:.3f} s per iteration on {r.device})",
        f"- initialization: {res.init}, seed {cfg.seed}",
        *([f"- ZCA whitening, regularization {cfg.zca} (grid shown un-whitened)"] if cfg.zca is not None else []),
        f"- evaluation: protocol `{res.protocol.name}` ({res.protocol.epochs} epochs, augment {res.protocol.augment}, "
        f"{res.protocol.n_models} models, final test accuracy)",
        f"- peak memory: {r.peak_mem_mb:.0f} MB",
        "",
        format_table(r.reports),
        "",
        *_extra_lines(r.extra),
        "![distilled images](grid.png)",
        "",
        "![loss](loss.png)",
        "",
    ]
    return "\n".join(lines)
