"""The method protocol, its registry and the context a method runs in.

A method is a frozen ``Config`` dataclass with the paper's defaults plus a class built as
``Method(cfg, ctx)`` with ``step(iteration) -> metrics``, ``state_dict()`` and
``load_state_dict()``. Shared math lives in `datadistill.functional`, not in a base class.

A method owns its special cases through declared hooks, so that nothing outside its module
imports it: on the instance (`MethodHooks`: the networks evaluation starts from, extra file
metadata, further final metrics) and on its registry entry (`MethodEntry`: how a distilled file
is evaluated again, how its final metrics read, what ``datadistill pretrain`` trains).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import torch

from ..augment import DSAConfig, apply, parse_strategy, siamese_params_for_classes
from ..config import ConfigError
from ..data.spec import LoadedDataset
from ..errors import UserError
from ..registry import Registry
from ..seeding import fork


class DivergenceError(UserError, FloatingPointError):
    """A method's loss or a learned quantity became non-finite or left its valid range. Raised
    *before* the offending update is applied, so the set and the method are still in their last
    good state (the engine checkpoints that state before passing the error on)."""


@dataclass
class Context:
    """What a method gets: the data, the set it optimizes, the device and its own RNG stream."""

    data: LoadedDataset
    synset: Any  # None while a method's ``check`` runs, before the set is built
    device: torch.device
    generator: torch.Generator
    seed: int
    ipc: int
    iterations: int = 0
    data_root: str | None = None  # where further datasets are loaded from (e.g. a pretraining source)
    dataset_options: dict[str, Any] = field(default_factory=dict)  # what the dataset was loaded with

    @property
    def spec(self):
        return self.data.spec


class Method(Protocol):
    def step(self, iteration: int) -> dict[str, float]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...
    # optional hooks, with the defaults of `MethodHooks`
    def eval_networks(self) -> Callable[[int, str], Any] | None: ...
    def file_meta(self) -> dict[str, Any]: ...
    def final_metrics(self, synset: Any, data: LoadedDataset, device: torch.device) -> dict[str, Any] | None: ...
    def eval_metrics(self) -> dict[str, Any] | None: ...


class MethodHooks:
    """The `Method` protocol's optional hooks and their defaults. A method class lists this as its
    base to say "the defaults for what I do not define"; it holds no state and no behaviour of its
    own, so the engine calls every hook without probing for it."""

    def eval_networks(self) -> Callable[[int, str], Any] | None:
        """``(i, model_name) -> nn.Module`` the evaluation's i-th network starts from; None: fresh ones."""
        return None

    def file_meta(self) -> dict[str, Any]:
        """Extra metadata for the distilled file (JSON-able)."""
        return {}

    def final_metrics(self, synset: Any, data: LoadedDataset, device: torch.device) -> dict[str, Any] | None:
        """Further final numbers beyond the evaluation's accuracy (e.g. DD's before/after), or None."""
        return None

    def eval_metrics(self) -> dict[str, Any] | None:
        """Cheap numbers about the set recorded beside each intermediate evaluation (e.g. HaBa's
        collapse diagnostic), or None."""
        return None


@dataclass
class Selected:
    """What a one-shot method's ``select`` returns: the set it chose or built, and what the distilled
    file records about the choice (JSON-able; e.g. the rule and features, a teacher, the crops)."""

    synset: Any
    meta: dict[str, Any] = field(default_factory=dict)


class OneShot(MethodHooks):
    """The method of a run whose entry selects (``MethodEntry.select``): the set was made before the
    loop and there is nothing to optimize; the file records what ``select`` said about it."""

    def __init__(self, name: str, meta: dict[str, Any]) -> None:
        self.name, self.meta = name, meta

    def step(self, iteration: int) -> dict[str, float]:
        raise RuntimeError(f"{self.name} selects its set once and has no iterations; run it with iterations=0")

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def file_meta(self) -> dict[str, Any]:
        return dict(self.meta)


def format_metrics(metrics: dict[str, Any], *, markdown: bool = False, title: str = "final metrics") -> list[str]:
    """Lines showing a method's final metrics (`MethodHooks.final_metrics`): one console line of each
    metric's ``mean ± std`` (or value), or with ``markdown`` a titled table for ``report.md``."""

    def shown(v: Any) -> str:
        return f"{v['mean']:.2f} ± {v['std']:.2f}" if isinstance(v, dict) and "mean" in v else f"{v}"

    rows = {k: v for k, v in metrics.items() if isinstance(v, (dict, int, float)) and not isinstance(v, bool)}
    if not markdown:
        return [f"{title}: " + ", ".join(f"{k} {shown(v)}" for k, v in rows.items())]
    return [f"{title[0].upper()}{title[1:]}:", "", "| metric | value |", "|---|---|",
            *(f"| {k} | {shown(v)} |" for k, v in rows.items()), ""]


@dataclass(frozen=True)
class FileEvaluation:
    """How ``datadistill evaluate FILE`` judges a distilled file, as its method rebuilds it from the
    file's metadata (`MethodEntry.from_file`)."""

    preset: str = "dc"  # the evaluation protocol when none is asked for
    # ``(i, model_name) -> nn.Module``: the networks evaluation starts from (e.g. DD's fixed or
    # pretrained ones); None: fresh ones from the protocol's seeds
    networks: Callable[[int, str], Any] | None = None
    protocol: dict[str, Any] = field(default_factory=dict)  # fields the set was made for (explicit overrides win)
    # ``(synset, data, device) -> dict | None``: further numbers beyond accuracy (e.g. DD's before/after)
    final_metrics: Callable[[Any, LoadedDataset, torch.device], dict[str, Any] | None] | None = None
    format_metrics: Callable[..., list[str]] = format_metrics  # how those numbers are shown


def default_from_file(meta: dict[str, Any], spec: Any) -> FileEvaluation:
    """A file's evaluation when its method says nothing more (and for files whose method is not
    registered): a set with one learned step size trains with it under ``mtt``, any other under
    ``dc``, with fresh networks, as files have always been evaluated."""
    return FileEvaluation(preset="mtt" if meta.get("learned_lr") is not None else "dc")


def file_description(synset: Any, meta: dict[str, Any]) -> list[str]:
    """What the method named in a file's metadata says about its set (`MethodEntry.describe`), or nothing."""
    name = meta.get("method")
    entry = METHODS.get(name) if isinstance(name, str) and name in METHODS else None
    return entry.describe(synset, meta) if entry is not None and entry.describe is not None else []


def file_evaluation(meta: dict[str, Any], spec: Any) -> FileEvaluation:
    """How to evaluate a distilled file: asked of the method named in its metadata; a file without
    a registered method name gets `default_from_file`."""
    name = meta.get("method")
    entry = METHODS.get(name) if isinstance(name, str) and name in METHODS else None
    return (entry.from_file if entry is not None else default_from_file)(meta, spec)


@dataclass(frozen=True)
class MethodFlag:
    """A ``datadistill distill`` flag a method declares for a field of its config (``--flag VALUE`` sets
    ``method_config.KEY``); ``implies``: further fields it sets when the command line does not (e.g.
    DD's ``--source-dataset`` implies ``net_init=pretrained_random``)."""

    flag: str
    key: str
    help: str = ""
    implies: dict[str, Any] = field(default_factory=dict)
    type: Callable[[str], Any] = str  # how the flag's text is read
    default: Any = None  # None: the method's own default


@dataclass(frozen=True)
class MethodEntry:
    """A registered method: its config class, its constructor, run defaults and the hooks through
    which the engine, ``datadistill evaluate FILE``, ``datadistill pretrain`` and the report reach
    it without importing it.

    An iterative method gives ``build(cfg, ctx) -> Method`` and ``iterations``, the default number of
    ``step`` calls. A one-shot method (a coreset, RDED) gives ``select(cfg, data, ipc, init, generator)
    -> Selected`` instead: the set is chosen once, before the (empty) loop, and its file records
    ``Selected.meta``; its runs have no iterations. ``image_init`` is the default initialization of
    the set's images, one of ``image_inits``; ``zca`` the whitening a run gets unless it names one. A method instance's own
    hooks are `MethodHooks`; the entry's work from a file alone:

    - ``from_file(meta, spec) -> FileEvaluation``: the evaluation a distilled file of this method
      asks for (default `default_from_file`);
    - ``format_metrics(metrics, markdown=False) -> list[str]``: how the method's final metrics
      read on the console and in ``report.md`` (default `format_metrics`);
    - ``pretrain(**options) -> str``: trains what the method starts from (DD's pools of pretrained
      networks, for ``datadistill pretrain``) and returns a summary line; None: nothing to train.

    ``check(cfg, ctx)`` states the method's own requirements, checked before a run starts and
    before its folder is created (`resolve.check_run`): it raises `ConfigError` (or another error
    that names the problem and what is valid) for, e.g., a missing pool or expert folder. ``ctx``
    is the run's context without a set (``ctx.synset`` is None) on the data as loaded; a check
    reads files and compares, it must not train or write anything.
    """

    name: str
    config: type
    build: Callable[[Any, Context], Method] | None = None  # an iterative method's constructor
    iterations: int = 0
    # a one-shot method's ``(cfg, data, ipc, init, generator) -> Selected`` (then no ``build``, no iterations)
    select: Callable[..., Selected] | None = None
    image_init: str = "real"
    description: str = ""  # one line for `datadistill list methods`
    eval_preset: str = "dc"  # the evaluation protocol the method's results are reported with
    image_inits: tuple[str, ...] = ("real", "noise")  # the image initializations ``synset`` accepts
    # ``synset(cfg, data, ipc, init, generator)`` builds the set the method optimizes; None: PixelSet
    synset: Callable[..., Any] | None = None
    check: Callable[[Any, Context], None] | None = None  # up-front checks of a run (see above)
    from_file: Callable[[dict[str, Any], Any], FileEvaluation] = default_from_file
    format_metrics: Callable[..., list[str]] = format_metrics
    pretrain: Callable[..., str] | None = None
    # the command-line flags of the method's own settings (`MethodFlag`; DD: --net-init, --source-dataset)
    flags: tuple[MethodFlag, ...] = ()
    # the flags of ``datadistill pretrain`` that only this method's ``pretrain`` takes (DD: --nets, --held-out)
    pretrain_flags: tuple[MethodFlag, ...] = ()
    # ``describe(synset, meta) -> lines``: what ``datadistill show`` prints about a file's set beyond its picture
    # (HaBa: its storage and the collapse diagnostic); None: nothing
    describe: Callable[[Any, dict[str, Any]], list[str]] | None = None
    # the ZCA regularization a run whitens its data with when it does not say (``RunConfig.zca`` "auto");
    # None: no whitening
    zca: float | None = None
    # what resolving a run asks of the method's config, declared rather than probed by field name:
    # the network the method trains or matches with (``config_model``; None: none of its own) and the
    # teacher file its evaluation relabels with under ``labels=teacher`` (None: none)
    network: Callable[[Any], str | None] = lambda cfg: None
    teacher: Callable[[Any], str | None] = lambda cfg: None


def config_model(cfg: Any) -> str:
    """`MethodEntry.network` of a method whose config names its network ``model``."""
    return cfg.model


METHODS: Registry[MethodEntry] = Registry("method")


def check_ranges(method: str, cfg: Any, *, dsa_strategy: str | None = None, positive: tuple[str, ...] = (),
                 rates: tuple[str, ...] = (),
                 momenta: tuple[str, ...] = ()) -> None:
    """Ranges shared by the methods' configs, for a config's ``__post_init__``: ``positive`` counts
    are >= 1, ``rates`` (learning rates) >= 0, ``momenta`` in [0, 1), and a ``dsa_strategy`` names
    known ops when the config trains with DSA (``dsa_strategy`` given, e.g. ``self.dsa_strategy if self.dsa
    else None``). One `ConfigError` names every bad field and its range."""
    bad = [f"{n} must be >= 1, got {getattr(cfg, n)!r}" for n in positive if not getattr(cfg, n) >= 1]
    bad += [f"{n} must be >= 0, got {getattr(cfg, n)!r}" for n in rates if not getattr(cfg, n) >= 0]
    bad += [f"{n} must be in [0, 1), got {getattr(cfg, n)!r}" for n in momenta if not 0 <= getattr(cfg, n) < 1]
    if bad:
        raise ConfigError(f"{method}: {'; '.join(bad)}")
    if dsa_strategy is not None:
        try:
            parse_strategy(dsa_strategy)
        except ValueError as e:
            raise ConfigError(f"{method}: dsa_strategy: {e}") from None


def register_method(entry: MethodEntry, *aliases: str) -> MethodEntry:
    if (entry.build is None) == (entry.select is None):
        raise TypeError(f"method {entry.name!r}: give build (an iterative method) or select (a one-shot one), not both")
    if entry.select is not None and (entry.iterations or entry.synset is not None):
        raise TypeError(f"method {entry.name!r} selects: it has no iterations and no synset factory")
    METHODS.add(entry.name, entry, aliases=aliases)
    return entry


def class_batches(ctx: Context, n_real: int, dsa: DSAConfig | None,
                  g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One matching step's inputs for DC and DM: ``n_real`` real images of every class (class-major,
    on the device) and the set's images, both through one DSA draw per class when ``dsa`` is given
    (the "siamese" pairing of Zhao & Bilen 2021: real and synthetic images of a class share the
    transformation). The draw uses a fork of ``g`` taken after the real sample."""
    spec = ctx.spec
    real, _ = ctx.data.train.sample_classes(n_real, g)
    real = real.to(ctx.device)
    syn = ctx.synset.images
    if dsa is not None:
        rp, sp = siamese_params_for_classes(dsa, spec.num_classes, n_real, ctx.synset.ipc, fork(g),
                                            spec.image_size, allow_flip=spec.allow_flip)
        real, syn = apply(real, rp.to(ctx.device), dsa), apply(syn, sp.to(ctx.device), dsa)
    return real, syn
