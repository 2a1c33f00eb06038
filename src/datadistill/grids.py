"""The library's embarrassingly parallel work as executor tasks: one task per expert trajectory, one
per evaluated model and architecture (`executor`).

Each task names its result file deterministically and returns its bytes: an expert is its shard
(``expert-NNNNN.safetensors``, the bytes `train_experts` writes); an evaluated model is
``MODEL-NNN.json`` (accuracy, seed, seconds) in a folder keyed by the set file's content and the
protocol. A grid therefore resumes where it stopped, and its numbers are those of the serial path.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch

from .cache import cache_dir, config_hash
from .config import ConfigError
from .data import LoadedDataset
from .data.registry import load_ref
from .evaluation import EvalProtocol, EvalReport, evaluate
from .evaluation.evaluator import n_networks, network_row
from .executor import Executor, Task
from .experts import ExpertBuffer, ExpertConfig
from .experts.buffer import shard_name, write_manifest
from .experts.train import expert_shard, requested
from .methods import file_evaluation
from .methods.base import FileEvaluation
from .models import MODELS
from .paths import check_output_dir
from .synset import SynsetFile, load_synset


# -- experts -------------------------------------------------------------------------------------------
def expert_tasks(cfg: ExpertConfig, directory: str | Path, *, indices: Sequence[int] | None = None,
                 root: str | Path | None = None, device: str = "cpu") -> list[Task]:
    """One task per expert of ``indices`` (default all), writing its shard into ``directory``."""
    directory = Path(directory)
    wanted, _ = requested(cfg, directory, indices)
    root = None if root is None else str(root)
    return [Task(key=f"expert {i}", fn=expert_shard, args=(cfg.to_dict(), i),
                 kwargs={"root": root, "device": device}, out=directory / shard_name(i)) for i in wanted]


def train_experts_on(executor: Executor, cfg: ExpertConfig, directory: str | Path, *,
                     indices: Sequence[int] | None = None, root: str | Path | None = None,
                     device: str = "cpu") -> ExpertBuffer:
    """`experts.train_experts` through ``executor``: the same shards, one task per expert."""
    directory = Path(directory)
    tasks = expert_tasks(cfg, directory, indices=indices, root=root, device=device)
    if any(not t.done() for t in tasks):
        check_output_dir(directory, "expert folder")
    executor.run(tasks, desc=f"experts {cfg.model} on {cfg.dataset}")
    write_manifest(directory)
    return ExpertBuffer.open(directory)


# -- evaluation ----------------------------------------------------------------------------------------
def open_for_evaluation(path: str | Path, *, root: str | Path | None = None,
                        device: torch.device | str = "cpu") -> tuple[SynsetFile, LoadedDataset, FileEvaluation]:
    """A distilled-set file, the real data as the set sees it (the file's ZCA transform applied) and
    how its method asks it to be evaluated (`MethodEntry.from_file`)."""
    from .data.zca import match_whitening, unwhitened_spec

    f = load_synset(path, device=device)
    data = load_ref(f.spec.ref, root)  # the file's transform is applied next
    if data.spec.to_dict() != unwhitened_spec(f.spec).to_dict():
        raise ConfigError(f"{path} was distilled with a different spec of {f.spec.name} (normalization or size "
                          "differ) than the dataset on disk")
    data = match_whitening(data, f.zca)
    return f, data, file_evaluation(f.meta, data.spec)


def evaluate_model(blob: bytes, protocol: dict[str, Any], model: str, index: int | Sequence[int], *,
                   root: str | None = None, device: str = "cpu", batch_models: int = 1) -> bytes:
    """Model ``index`` of ``protocol`` trained on the distilled set whose file bytes are ``blob``: the
    JSON of its accuracy, seed, seconds and lr (an executor's task). A list of indices trains those
    models together, ``batch_models`` at a time (`evaluate`), and gives ``{"rows": [...]}``, a row each."""
    group = [index] if isinstance(index, int) else [int(i) for i in index]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "set.safetensors"
        path.write_bytes(blob)
        f, data, how = open_for_evaluation(path, root=root, device=device)
        rep = evaluate(f.synset, data, EvalProtocol.from_dict(protocol), model=model, device=device,
                       networks=how.networks, indices=group, batch_models=batch_models)
    row = network_row(rep)
    rows = [{"index": i, **row, "accuracy": rep.accuracies[j], "seed": rep.seeds[j], "seconds": rep.seconds / len(group)}
            for j, i in enumerate(group)]
    return json.dumps(rows[0] if isinstance(index, int) else {"rows": rows}).encode()


def evaluation_dir(blob: bytes, protocol: EvalProtocol) -> Path:
    """Where the per-model results of one set under one protocol are kept (the content decides)."""
    digest = hashlib.sha256(blob).hexdigest()[:16]
    return cache_dir("evaluations") / f"{digest}-{config_hash(protocol.to_dict())}"


def evaluate_on(executor: Executor, path: str | Path, protocol: EvalProtocol, models: Sequence[str], *,
                root: str | Path | None = None, device: str = "cpu", work_dir: str | Path | None = None,
                networks: Any = None, batch_models: int = 1) -> dict[str, EvalReport]:
    """`evaluation.evaluate_models` on a file through ``executor``: one task per model and
    architecture (``MODEL-NNN.json`` in ``work_dir``, default `evaluation_dir`), or with
    ``batch_models`` B > 1 one task per B consecutive models trained together (``MODEL-NNN-xB.json``).
    ``networks``, the starting networks a method provides (`FileEvaluation.networks`), caps the
    number of models when it is a finite pool (`evaluation.evaluator.n_networks`)."""
    if batch_models < 1:
        raise ConfigError(f"batch_models must be >= 1, got {batch_models}")
    for m in models:  # every name is checked before the first task
        MODELS.get(m)
    blob = Path(path).read_bytes()
    work = Path(work_dir) if work_dir is not None else evaluation_dir(blob, protocol)
    n = n_networks(protocol.n_models, networks)
    root = None if root is None else str(root)
    groups = [list(range(i, min(i + batch_models, n))) for i in range(0, n, batch_models)]
    tasks = {}
    for m in models:
        name = MODELS.canonical(m)
        for g in groups:
            index: int | list[int] = g[0] if batch_models == 1 else g
            file = f"{name}-{g[0]:03d}.json" if batch_models == 1 else f"{name}-{g[0]:03d}-x{len(g)}.json"
            tasks[(m, g[0])] = Task(key=f"{m} model {g[0]}" + (f"-{g[-1]}" if len(g) > 1 else ""), fn=evaluate_model,
                                    args=(blob, protocol.to_dict(), name, index),
                                    kwargs={"root": root, "device": device, "batch_models": batch_models},
                                    out=work / file)
    if tasks:
        check_output_dir(work, "evaluation folder")
    files = executor.run(list(tasks.values()), desc="evaluate")
    reports = {}
    for m in models:
        rows = []
        for g in groups:
            got = json.loads(Path(files[tasks[(m, g[0])].key]).read_text())
            rows += got["rows"] if "rows" in got else [got]
        extra = dict(rows[0].get("extra") or {})  # what the models trained on (labels, teacher), as `evaluate` says
        if executor.name != "serial":
            extra.update(executor=executor.name, results=str(work))
        reports[m] = EvalReport.from_rows(m, rows, extra=extra)
    return reports
