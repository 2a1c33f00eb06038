"""Train fresh models on a distilled set and report their final accuracy on the real test set."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from tqdm.auto import tqdm

from ..config import ConfigError
from ..data.spec import LoadedDataset, RealData
from ..models import MODELS, create_model
from ..seeding import make_generator
from ..synset.base import SetFeatures
from ..train import accuracy, real_batches, replay_steps, train_classifier
from .augments import build_augment, standardize
from .batched import evaluate_batched
from .labels import label_plan
from .protocol import EvalProtocol


@dataclass
class EvalReport:
    """Per-model final test accuracies (fractions) and their summary, with what produced them."""

    model: str
    protocol: EvalProtocol
    accuracies: list[float]
    seeds: list[int]
    seconds: float
    lr: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def mean(self) -> float:
        return sum(self.accuracies) / len(self.accuracies)

    @property
    def std(self) -> float:
        m = self.mean
        return math.sqrt(sum((a - m) ** 2 for a in self.accuracies) / len(self.accuracies))

    def summary(self) -> str:
        return f"{self.model}: {100 * self.mean:.2f} ± {100 * self.std:.2f}% over {len(self.accuracies)} models"

    @classmethod
    def from_rows(cls, model: str, rows: Sequence[dict[str, Any]], extra: dict[str, Any] | None = None
                  ) -> "EvalReport":
        """The report of networks evaluated one at a time (`network_row` each, in order), as one
        `evaluate` call over the same indices would give it."""
        return cls(model, EvalProtocol.from_dict(rows[0]["protocol"]), [r["accuracy"] for r in rows],
                   [r["seed"] for r in rows], sum(r["seconds"] for r in rows), rows[0]["lr"],
                   dict(rows[0].get("extra") or {}) if extra is None else extra)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "protocol": self.protocol.to_dict(), "accuracies": self.accuracies,
            "acc_mean": 100 * self.mean, "acc_std": 100 * self.std, "n_models": len(self.accuracies),
            "seeds": self.seeds, "seconds": self.seconds, "lr": self.lr, **self.extra,
        }


def network_row(rep: EvalReport) -> dict[str, Any]:
    """One network's result (a report of one index) as a JSON-able row; `EvalReport.from_rows` joins them."""
    return {"model": rep.model, "accuracy": rep.accuracies[0], "seed": rep.seeds[0], "seconds": rep.seconds,
            "lr": rep.lr, "protocol": rep.protocol.to_dict(), "extra": rep.extra}


def n_networks(n_models: int, networks: Any = None) -> int:
    """How many networks an evaluation trains: the protocol's ``n_models``, capped by the size of a
    finite pool of starting networks (a held-out pool of pretrained networks) when one is given."""
    if networks is not None and hasattr(networks, "__len__"):
        return min(n_models, len(networks))
    return n_models


__all__ = ["EvalReport", "n_networks", "network_row", "RealSet", "evaluate", "evaluate_full", "evaluate_models", "format_table"]


def evaluate(
    synset: Any,
    data: LoadedDataset,
    protocol: EvalProtocol,
    *,
    model: str | None = None,
    device: torch.device | str = "cpu",
    progress: bool = False,
    networks: Callable[[int, str], torch.nn.Module] | None = None,
    indices: Sequence[int] | None = None,
    batch_models: int = 1,
    probe: Callable[[int, torch.nn.Module], Any] | None = None,
) -> EvalReport:
    """Train ``protocol.n_models`` fresh ``model``s (default ``protocol.model``) on ``synset``.

    The set is used only through ``synset.batches(batch_size, generator)`` and
    ``synset.learned_lr()`` (or, for the ``replay`` schedule, ``synset.schedule()``), so any set
    type works. ``networks(i, model)`` supplies the i-th starting network when a method ties its data to
    particular initializations (DD's fixed or pretrained networks; ``networks`` with ``len()`` caps
    the number of models at it); by default each model is a fresh initialization seeded from the
    protocol, drawn from ``protocol.weight_init``, never one seen during distillation.

    ``synset`` may also be a loaded file (`load_synset`): a set distilled on ZCA-whitened data is
    then evaluated on ``data`` (as `load_dataset` returns it) whitened with the file's transform.

    ``indices`` trains only those of the ``n_models`` models (model ``i`` is the same wherever it is
    trained: its seed is ``protocol.seed * 1000 + i``), so that an executor can spread them.

    ``batch_models``: how many models train together as one batched computation (`batched`), with
    the same results up to float rounding; 1 trains them one after another. The ``replay`` schedule,
    ``networks`` and any labels but hard ones always train one after another.

    ``probe(i, net)`` is called with each trained network before it is dropped (model ``i``); its
    results are ``report.extra["probes"]`` in model order (a membership attack reads the network's
    outputs on the training images this way: `studies.privacy`). Models with a probe train one after
    another.

    Labels: the protocol's ``labels``, ``label_loss``, ``label_temperature`` and ``teacher``
    (`evaluation.labels`); the report's ``extra["labels"]`` records what was used.

    Training: the protocol's optimizer, lr schedule and length (`EvalProtocol.optim`; a
    ``steps_by_size`` table picks the steps from the set's number of images, and the report's
    protocol records them), its augmentation by name (`evaluation.augments`) and, with
    ``standardize``, every training batch and every test batch of ``test_batch_size`` images (in
    order) standardized by its own mean and std.
    """
    if batch_models < 1:
        raise ConfigError(f"batch_models must be >= 1, got {batch_models}")
    synset, data = as_set_and_data(synset, data)
    model = model or protocol.model
    MODELS.get(model)  # an unknown name lists the valid ones, before any training
    spec = data.spec
    protocol = protocol.resolved(spec.name, MODELS.canonical(model))
    lr = protocol.optimizer.lr
    if protocol.optimizer.use_learned_lr and synset.learned_lr() is not None:
        lr = float(synset.learned_lr())
    replay = protocol.schedule.mode == "replay"
    if not replay:
        protocol = protocol.sized(len(synset))
    augment = build_augment(spec, protocol)
    plan = label_plan(synset, protocol, spec, device)
    synset = plan.synset
    test = data.test.to(device)
    if protocol.augment.standardize:
        test = standardized_test(test, protocol.test_batch_size)
    accs, seeds = [], []
    t0 = time.perf_counter()
    n_models = n_networks(protocol.n_models, networks)
    todo = range(n_models) if indices is None else [int(i) for i in indices]
    bad = [i for i in todo if not 0 <= i < n_models]
    if bad:
        raise ValueError(f"model indices {bad[:5]} out of range 0..{n_models - 1}")
    extra = {} if plan.hard and protocol.labels.mode == "auto" else {"labels": plan.info}
    probes: list[Any] = []
    if batch_models > 1 and probe is None and networks is None and not replay and plan.hard:
        accs, seeds = evaluate_batched(_Frozen(synset).batches, test, spec, protocol, model, indices=todo,
                                       batch_models=batch_models, lr=lr, augment=augment, device=device,
                                       progress=progress)
        return EvalReport(model, protocol, accs, seeds, time.perf_counter() - t0, lr, extra)
    for i in tqdm(todo, desc=f"evaluate {model}", disable=not progress, leave=False):
        seed = protocol.seed * 1000 + i
        if networks is not None:
            net = networks(i, model)
        else:
            net = create_model(model, spec.channels, spec.num_classes, spec.image_size, seed=seed,
                               weight_init=protocol.weight_init)
        g = make_generator(seed, "eval-train")
        if replay:
            if not synset.has_schedule:
                raise ValueError(f"the replay protocol needs a set with a step schedule; {type(synset).__name__} "
                                 "has none (use the dc or dsa protocol)")
            if not plan.hard:
                raise ConfigError("the replay protocol trains on the set's own steps and labels; it takes no "
                                  "soft labels or teacher")
            with torch.no_grad():
                steps = [(x.detach(), y, lr_.detach()) for x, y, lr_ in synset.schedule()]
            for _ in range(protocol.schedule.epochs):
                replay_steps(net, steps, device)
        else:
            train_classifier(
                net, _Frozen(synset).batches, epochs=protocol.schedule.train_epochs, lr=lr, optim=protocol.optim(lr),
                batch_size=protocol.batch_size, generator=g, augment=augment, device=device,
                loss=plan.loss, relabel=plan.relabel,
            )
        accs.append(accuracy(net, test, protocol.test_batch_size, device))
        seeds.append(seed)
        if probe is not None:
            probes.append(probe(i, net))
    if probe is not None:
        extra["probes"] = probes
    return EvalReport(model, protocol, accs, seeds, time.perf_counter() - t0, lr, extra)


def standardized_test(test: RealData, batch_size: int) -> RealData:
    """The test set as HaBa's evaluation feeds it: each batch of ``batch_size`` images, in order,
    standardized by its own mean and std (`augments.standardize`)."""
    images = torch.cat([standardize(test.images[i : i + batch_size]) for i in range(0, len(test), batch_size)])
    return RealData(images, test.labels, test.num_classes)


def as_set_and_data(synset: Any, data: LoadedDataset) -> tuple[Any, LoadedDataset]:
    """A loaded file (`SynsetFile`) is its set, evaluated on the real data as the set sees it: whitened
    with the file's stored ZCA transform when it has one (`match_whitening` refuses mixing)."""
    from ..synset.io import SynsetFile

    if isinstance(synset, SynsetFile):
        from ..data.zca import match_whitening

        return synset.synset, match_whitening(data, synset.zca)
    return synset, data


class _Frozen:
    """Detached view of a set's batches: evaluation never builds a graph back into the set."""

    def __init__(self, synset: Any) -> None:
        self.synset = synset

    def batches(self, batch_size: int, generator: torch.Generator):
        # each batch is *made* without autograd (a set that computes its images, e.g. HaBa's
        # hallucinators, builds no graph), but the yield is outside ``no_grad``: grad mode is global
        # and would leak into the training step that consumes the batch
        it = iter(self.synset.batches(batch_size, generator))
        while True:
            with torch.no_grad():
                batch = next(it, None)
            if batch is None:
                return
            yield batch[0].detach(), batch[1].detach()


class RealSet(SetFeatures):
    """The whole real training set behind the set protocol (the ``full`` baseline)."""

    def __init__(self, data: RealData) -> None:
        self.data = data
        self.batches = real_batches(data)

    def __len__(self) -> int:
        return len(self.data)

    def learned_lr(self) -> None:
        return None


def evaluate_full(data: LoadedDataset, protocol: EvalProtocol, *, model: str | None = None,
                  device: torch.device | str = "cpu", progress: bool = False, batch_models: int = 1) -> EvalReport:
    """The ``full`` baseline: the same protocol on the whole training set."""
    report = evaluate(RealSet(data.train.to(device)), data, protocol, model=model, device=device, progress=progress,
                      batch_models=batch_models)
    report.extra["baseline"] = "full"
    return report


def evaluate_models(synset: Any, data: LoadedDataset, protocol: EvalProtocol, models: Sequence[str],
                    *, device: torch.device | str = "cpu", progress: bool = False,
                    networks: Callable[[int, str], torch.nn.Module] | None = None,
                    batch_models: int = 1) -> dict[str, EvalReport]:
    """Cross-architecture evaluation: one report per model name (``networks`` and ``batch_models`` as
    in `evaluate`)."""
    for m in models:  # every name is checked before the first model trains
        MODELS.get(m)
    synset, data = as_set_and_data(synset, data)  # whiten once, not once per model
    return {m: evaluate(synset, data, protocol, model=m, device=device, progress=progress, networks=networks,
                        batch_models=batch_models) for m in models}


def format_table(reports: dict[str, EvalReport]) -> str:
    """A Markdown table of model, mean ± std and number of models."""
    lines = ["| model | accuracy (%) | models | epochs | augment |", "|---|---|---|---|---|"]
    for name, r in reports.items():
        lines.append(f"| {name} | {100 * r.mean:.2f} ± {100 * r.std:.2f} | {len(r.accuracies)} | "
                     f"{r.protocol.schedule.epochs} | {r.protocol.augment.name} |")
    return "\n".join(lines)
