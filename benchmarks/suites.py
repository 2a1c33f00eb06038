"""Benchmark suites: YAML files listing jobs, each with its budget (its command's arguments), the
figure expected of it, a tolerance and where the expectation comes from. This module reads and
checks suites and their records; `run.py` runs them, `report.py` turns the records into
docs/results.md.

A record is one JSON line in ``benchmarks/results/<job's results file>``; its ``job`` field names
the job it measures. A job's *latest* record is the one compared with its expectation: a job
regresses when that record's figure (``acc_mean`` unless the expectation names another ``metric``)
is below ``value - tolerance``.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from datadistill.fileio import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
SUITES_DIR = ROOT / "benchmarks" / "suites"
RESULTS_DIR = ROOT / "benchmarks" / "results"
RELEASED_DIR = ROOT / "benchmarks" / "released"

# kind: (required fields, optional fields) besides id, kind, results, args, expected
KINDS = {
    "distill": ({"method", "dataset", "ipc", "setting"}, {"cli_method", "needs", "extra"}),
    "full": ({"dataset", "setting"}, set()),
    "experts": ({"dataset"}, set()),
    "evaluate": ({"of", "model"}, set()),
    # DD-Ranking's scores of the set of ``of`` against the whole-data accuracy recorded by the ``full`` job
    "score": ({"of", "model", "full"}, {"needs", "extra"}),
    "teacher": ({"dataset"}, {"needs"}),
    "bases": ({"of"}, set()),
    # a study (`datadistill study NAME`, NAME in datadistill.studies.STUDIES): its summary, the sets it
    # compares named in ``args``
    "study": ({"study", "dataset"}, {"needs"}),
    # parity of a paper preset with the authors' own evaluator on one set ``file`` (benchmarks/parity.py
    # --set; ``args`` name the authors' checkout): its verdict is the record's agreement within the noise
    "parity": ({"file", "preset"}, set()),
}
COMMON = {"id", "kind", "results", "args", "expected", "paper", "unchecked"}
# a claim: a paper's published figure, and the job that measures ours on the protocol that reproduces it
CLAIM_FIELDS = {"id", "paper", "table", "method", "dataset", "ipc", "value", "std", "n", "protocol", "job",
                "iterations", "note", "metric"}
SELECTIONS = ("random", "herding", "kcenter")  # methods that pick real images: no iterations to compare
CLAIM_REQUIRED = {"id", "paper", "table", "method", "dataset", "ipc", "value", "protocol"}
# chance accuracy (%) of the datasets the suites use: an expectation whose floor is at or below it checks nothing
CHANCE = {"mnist": 10.0, "fashion_mnist": 10.0, "digits": 10.0}


class SuiteError(ValueError):
    """A suite file or a command line that cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class Expectation:
    value: float
    tolerance: float
    source: str
    metric: str = "acc_mean"

    @property
    def floor(self) -> float:
        return self.value - self.tolerance


@dataclass(frozen=True)
class Job:
    id: str
    kind: str
    results: str
    args: tuple[str, ...] = ()
    expected: Expectation | None = None
    method: str | None = None
    cli_method: str | None = None
    dataset: str | None = None
    ipc: int | None = None
    setting: str | None = None
    model: str | None = None
    of: str | None = None
    needs: str | None = None
    study: str | None = None  # study jobs: a registered study (continual, privacy, nas, ipc-curve ...)
    full: str | None = None  # score jobs: the ``full`` job whose record is the whole-data reference
    extra: dict = field(default_factory=dict)
    paper: dict | None = None  # the paper's own figure for this setting: value, std, source
    unchecked: str | None = None  # why the job has no expectation (e.g. its figure is at chance by design)
    file: str | None = None  # parity jobs: the set both evaluators score (a path in the repository)
    preset: str | None = None  # parity jobs: the paper preset compared with the authors' evaluator
    suite: str | None = None  # the suite that holds the job (set on loading: its records name it)


@dataclass(frozen=True)
class Claim:
    """A figure a paper publishes (``value`` +- ``std`` over ``n`` evaluations, its ``table``) for
    ``method`` at ``ipc`` images per class, the evaluation ``protocol`` that reproduces the paper's,
    the ``job`` that measures ours on that protocol (None: no such job yet, ``note`` says why) and the
    paper's distillation ``iterations`` (None for selections), against which our budget is stated."""
    id: str
    paper: str
    table: str
    method: str
    dataset: str
    ipc: int
    value: float
    protocol: str
    std: float | None = None
    n: int | None = None
    job: str | None = None
    iterations: int | None = None
    note: str | None = None
    metric: str = "acc_mean"  # the record field the paper's figure is compared with (``X_mean``/``X_std``)


@dataclass(frozen=True)
class Suite:
    name: str
    path: Path
    jobs: tuple[Job, ...]
    filling: bool = False  # jobs still gain their first record (and from it their expectation)
    claims: tuple[Claim, ...] = ()
    not_run: str | None = None  # why a suite has no record at all (a GPU suite): said, never passed silently

    def job(self, job_id: str) -> Job:
        """A job of this suite, or ``SUITE:ID`` a job of another suite (an evaluation of its set)."""
        if ":" in job_id:
            other, jid = job_id.split(":", 1)
            return load_suite(other).job(jid)
        for j in self.jobs:
            if j.id == job_id:
                return j
        raise SuiteError(f"no job {job_id!r} in {self.path.name}{_close(job_id, [j.id for j in self.jobs])}")

    def select(self, only: list[str] | None) -> list[Job]:
        """The jobs named in ``only`` (ids, or comma-separated lists of ids, as ``--only`` takes them);
        every job when it names none."""
        ids = [i for o in only or [] for i in o.split(",") if i]
        return list(self.jobs) if not ids else [self.job(i) for i in ids]


def _close(name: str, names: list[str]) -> str:
    m = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    return f" (did you mean {', '.join(m)}?)" if m else ""


def resolve_suite_path(arg: str) -> Path:
    """``cpu`` -> benchmarks/suites/cpu.yaml; a path is taken as it is."""
    p = Path(arg)
    if p.is_file():
        return p
    named = SUITES_DIR / f"{arg}.yaml"
    if named.is_file():
        return named
    have = sorted(q.stem for q in SUITES_DIR.glob("*.yaml"))
    raise SuiteError(f"no suite {arg!r}: neither a file nor one of benchmarks/suites/ ({', '.join(have)})")


def load_suite(arg: str | Path) -> Suite:
    path = resolve_suite_path(str(arg))
    stat = path.stat()
    return _load_suite(path.resolve(), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=64)
def _load_suite(path: Path, mtime_ns: int, size: int) -> Suite:
    """A suite file parsed once per content (YAML parsing is slow, and suites name each other's jobs)."""
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SuiteError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("jobs"), list):
        raise SuiteError(f"{path}: a suite is a mapping with a `jobs:` list")
    jobs = [_job(path, i, j) for i, j in enumerate(doc["jobs"])]
    ids = [j.id for j in jobs]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise SuiteError(f"{path}: job ids must be unique; repeated: {', '.join(dup)}")
    for j in jobs:
        for ref in (j.needs, j.of):
            if ref is not None and ":" in ref:  # another suite's job
                other, jid = ref.split(":", 1)
                if Path(resolve_suite_path(other)).resolve() == path.resolve():
                    raise SuiteError(f"{path}: job {j.id} refers to {ref!r}: name a job of this suite without the prefix")
                load_suite(other).job(jid)
            elif ref is not None and ref not in ids:
                raise SuiteError(f"{path}: job {j.id} refers to {ref!r}, which is not a job of this suite"
                                 f"{_close(ref, ids)}")
    claims = [_claim(path, i, c) for i, c in enumerate(doc.get("claims") or [])]
    cids = [c.id for c in claims]
    dup = sorted({i for i in cids if cids.count(i) > 1})
    if dup:
        raise SuiteError(f"{path}: claim ids must be unique; repeated: {', '.join(dup)}")
    for c in claims:
        if c.job is not None and c.job not in ids:
            raise SuiteError(f"{path}: claim {c.id} names job {c.job!r}, which is not a job of this suite{_close(c.job, ids)}")
        if c.job is None and not c.note:
            raise SuiteError(f"{path}: claim {c.id} has no job: its `note` must say why")
    name = str(doc.get("suite") or path.stem)
    jobs = [dataclasses.replace(j, suite=name) for j in jobs]
    return Suite(name, path, tuple(jobs), bool(doc.get("filling", False)),
                 tuple(claims), doc.get("not_run"))


def _claim(path: Path, index: int, raw: object) -> Claim:
    where = f"{path.name}, claim {index + 1}"
    if not isinstance(raw, dict):
        raise SuiteError(f"{where}: each claim is a mapping")
    missing = sorted(CLAIM_REQUIRED - raw.keys())
    if missing:
        raise SuiteError(f"{where}: missing {', '.join(missing)}")
    unknown = sorted(raw.keys() - CLAIM_FIELDS)
    if unknown:
        raise SuiteError(f"{where}: unknown field(s) {', '.join(unknown)}; valid: {', '.join(sorted(CLAIM_FIELDS))}")
    try:
        num = {k: float(raw[k]) for k in ("value", "std") if raw.get(k) is not None}
        ints = {k: int(raw[k]) for k in ("ipc", "n", "iterations") if raw.get(k) is not None}
    except (TypeError, ValueError):
        raise SuiteError(f"{where}: value, std, ipc, n and iterations are numbers") from None
    return Claim(**{k: raw[k] for k in raw.keys() - num.keys() - ints.keys()}, **num, **ints)


def _check_names(where: str, fields: dict) -> None:
    """A job names its study, method and dataset by their registry names (or aliases): a typo is an
    error when the suite loads, not when its job runs."""
    from datadistill.config import ConfigError
    from datadistill.data import DATASETS
    from datadistill.methods import METHODS
    from datadistill.studies import STUDIES, discover

    discover()
    for key, registry in (("study", STUDIES), ("cli_method", METHODS), ("dataset", DATASETS)):
        if key in fields:
            try:
                registry.get(str(fields[key]))
            except (ConfigError, KeyError, ValueError) as e:
                raise SuiteError(f"{where}: {key} {fields[key]!r}: {e}") from None
    if "method" in fields and "cli_method" not in fields:
        try:
            METHODS.get(str(fields["method"]))
        except (ConfigError, KeyError, ValueError) as e:
            raise SuiteError(f"{where}: method {fields['method']!r}: {e}") from None


def _job(path: Path, index: int, raw: object) -> Job:
    where = f"{path.name}, job {index + 1}"
    if not isinstance(raw, dict) or "id" not in raw:
        raise SuiteError(f"{where}: each job is a mapping with an `id`")
    where = f"{path.name}, job {raw['id']}"
    kind = raw.get("kind")
    if kind not in KINDS:
        raise SuiteError(f"{where}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    required, optional = KINDS[kind]
    missing = sorted((required | {"results"}) - raw.keys())
    if missing:
        raise SuiteError(f"{where}: missing {', '.join(missing)}")
    unknown = sorted(raw.keys() - required - optional - COMMON)
    if unknown:
        raise SuiteError(f"{where}: unknown field(s) {', '.join(unknown)} for kind {kind}")
    args = raw.get("args") or []
    if not isinstance(args, list) or not all(isinstance(a, (str, int, float)) for a in args):
        raise SuiteError(f"{where}: args is a list of strings")
    exp = raw.get("expected")
    if exp is not None:
        if not isinstance(exp, dict) or not {"value", "tolerance", "source"} <= exp.keys():
            raise SuiteError(f"{where}: expected needs value, tolerance and source")
        extra_keys = sorted(exp.keys() - {"value", "tolerance", "source", "metric"})
        if extra_keys:
            raise SuiteError(f"{where}: unknown field(s) in expected: {', '.join(extra_keys)}")
        try:
            exp = Expectation(float(exp["value"]), float(exp["tolerance"]), str(exp["source"]),
                              str(exp.get("metric", "acc_mean")))
        except (TypeError, ValueError):
            raise SuiteError(f"{where}: expected value and tolerance are numbers") from None
    paper = raw.get("paper")
    if paper is not None and (not isinstance(paper, dict) or not {"value", "source"} <= paper.keys()):
        raise SuiteError(f"{where}: paper needs value and source (and optionally std)")
    unchecked = raw.get("unchecked")
    if exp is not None and unchecked is not None:
        raise SuiteError(f"{where}: a job has an expectation or a reason to be unchecked, not both")
    fields = {k: raw[k] for k in required | optional if k in raw}
    _check_names(where, fields)
    if "ipc" in fields:
        fields["ipc"] = int(fields["ipc"])
    return Job(id=str(raw["id"]), kind=kind, results=str(raw["results"]), args=tuple(str(a) for a in args),
               expected=exp, paper=paper, unchecked=unchecked, **fields)


def results_path(job: Job, override: Path | None = None) -> Path:
    return override if override is not None else RESULTS_DIR / job.results


def read_records(path: Path) -> list[dict]:
    """The records of a results file; a torn last line (a writer killed mid-line) is dropped with one
    warning, a bad line before it is a `SuiteError` naming the line."""
    try:
        return read_jsonl(path)
    except ValueError as e:
        raise SuiteError(str(e)) from None


def job_rows(job: Job, override: Path | None = None) -> list[dict]:
    """The records of ``job`` in its records file, oldest first: the lines naming it (a parity job's:
    also those of its set and preset, which parity.py writes without a job name)."""
    return [r for r in read_records(results_path(job, override)) if r.get("job") == job.id
            or (job.kind == "parity" and r.get("set") == job.file and r.get("preset") == job.preset)]


def latest_record(job: Job, override: Path | None = None) -> dict | None:
    """The job's newest record (the last line naming it; for an evaluation of several models, the
    job's own model when it names one)."""
    rows = job_rows(job, override)
    if job.model:
        rows = [r for r in rows if r.get("model") == job.model] or rows
    return rows[-1] if rows else None


@dataclass(frozen=True)
class Verdict:
    job: Job
    status: str  # ok | regression | not run | no expectation | unchecked | no figure
    measured: float | None = None
    record: dict | None = None

    def line(self) -> str:
        e = self.job.expected
        if self.job.kind == "parity" and self.status in ("ok", "regression"):
            a, r = self.record["agreement"], self.record
            return (f"{self.status:<10} {self.job.id}: ours {r['acc_mean']:.2f} vs the authors' evaluator "
                    f"{r['reference_mean']:.2f} ({r['n_models']} and {len(r['reference_accs'])} models): "
                    f"difference {a['diff']:+.2f}, {'within' if a['agree'] else 'beyond'} two combined standard "
                    f"errors ({2 * a['combined_se']:.2f}; commit {r.get('commit', '?')})")
        if self.status in ("ok", "regression"):
            kind = "regression check against" if e.source.startswith("our record") else "expected from"
            return (f"{self.status:<10} {self.job.id}: {e.metric} {self.measured:.2f} vs {e.value:.2f} "
                    f"- {e.tolerance:g} (commit {self.record.get('commit', '?')}; {kind} {e.source})")
        if self.status == "unchecked":
            return f"{self.status:<10} {self.job.id}: {self.job.unchecked}"
        return f"{self.status:<10} {self.job.id}"


def check(jobs: list[Job], override: Path | None = None) -> list[Verdict]:
    out = []
    for job in jobs:
        rec = latest_record(job, override)
        if rec is None:
            out.append(Verdict(job, "not run"))
        elif job.unchecked is not None:
            out.append(Verdict(job, "unchecked", None, rec))
        elif job.kind == "parity":  # the two evaluators agree within their noise, or it is a regression
            agree = (rec.get("agreement") or {}).get("agree")
            out.append(Verdict(job, "no figure", None, rec) if agree is None else
                       Verdict(job, "ok" if agree else "regression", rec["agreement"]["diff"], rec))
        elif job.expected is None:
            out.append(Verdict(job, "no expectation", None, rec))
        elif job.expected.metric not in rec:
            out.append(Verdict(job, "no figure", None, rec))
        else:
            got = float(rec[job.expected.metric])
            out.append(Verdict(job, "ok" if got >= job.expected.floor else "regression", got, rec))
    return out


# -- a job's figure, and claims against it ------------------------------------------------------------
def reruns(rows: list[dict]) -> list[dict]:
    """Of one job's records, those that make its figure: the records of its latest command (its reruns,
    on any commit or machine), on the model of its latest record, with the teacher of its latest record
    (a teacher file rebuilt at the same path is another teacher: its sha256 tells them apart)."""
    if not rows:
        return []
    last = rows[-1]

    def key(r: dict) -> tuple:
        return r.get("command"), r.get("model"), (r.get("teacher") or {}).get("sha256")

    return [r for r in rows if key(r) == key(last)]


def job_runs(job: Job, override: Path | None = None) -> list[dict]:
    """`reruns` of the job's records, on the job's own model when it names one; [] when it has none."""
    rows = job_rows(job, override)
    if job.model:
        rows = [r for r in rows if r.get("model") == job.model] or rows
    return reruns(rows)


def pooled(runs: list[dict], metric: str = "acc_mean") -> dict | None:
    """One figure from a job's reruns: the mean and population std of every evaluated model's accuracy
    over all runs (for one run, its own mean and std), with ``n_runs`` and ``n_models`` (in all).
    Another ``metric`` (a record's ``X`` with ``X_std``) pools the runs' means."""
    runs = [r for r in runs if metric in r]
    if not runs:
        return None
    std_key = metric[:-len("_mean")] + "_std" if metric.endswith("_mean") else metric + "_std"
    if len(runs) == 1:
        r = runs[0]
        return {"acc_mean": r[metric], "acc_std": r.get(std_key) or 0.0, "n_runs": 1,
                "n_models": r.get("n_models") or len(r.get("accuracies") or [0]), "latest": r}
    accs = [a for r in runs for a in ((r.get("accuracies") if metric == "acc_mean" else None) or [r[metric]])]
    mean = sum(accs) / len(accs)
    std = (sum((a - mean) ** 2 for a in accs) / len(accs)) ** 0.5
    return {"acc_mean": round(mean, 2), "acc_std": round(std, 2), "n_runs": len(runs), "n_models": len(accs),
            "latest": runs[-1]}


@dataclass(frozen=True)
class ClaimCheck:
    """Our figure on a claim's protocol beside the paper's: ``diff`` = ours - paper, ``se`` its standard
    error (ours std / sqrt(our models), and the paper's std / sqrt(its n) when the paper states n),
    ``budget`` our distillation iterations / the paper's (None for selections or unknown)."""
    claim: Claim
    ours: dict | None
    diff: float | None = None
    se: float | None = None
    budget: float | None = None
    our_iterations: int | None = None
    protocol_used: str | None = None
    suite: str = "SUITE"

    def line(self) -> str:
        c = self.claim
        paper = f"{c.value:g}" + (f" ± {c.std:g}" if c.std is not None else "") + f" ({c.paper}, {c.table})"
        if self.ours is None:
            why = c.note or f"not run: python benchmarks/run.py {self.suite} --only {c.job}"
            return f"claim      {c.id}: paper {paper}; ours: {why}"
        ratio = f"; budget {self.budget:.3g}x the paper's iterations" if self.budget is not None else ""
        return (f"claim      {c.id}: ours {self.ours['acc_mean']:.2f} ± {self.ours['acc_std']:.2f} "
                f"(`{self.protocol_used}`, {self.ours['n_models']} models) vs paper {paper}: "
                f"{self.diff:+.2f} ± {self.se:.2f}{ratio}")


def check_claims(suite: Suite, override: Path | None = None) -> list[ClaimCheck]:
    out = []
    for c in suite.claims:
        job = suite.job(c.job) if c.job else None
        fig = pooled(job_runs(job, override), c.metric) if job else None
        if fig is None:
            out.append(ClaimCheck(c, None, suite=suite.name))
            continue
        rec = fig["latest"]
        se2 = (fig["acc_std"] ** 2) / max(fig["n_models"], 1)
        if c.std is not None and c.n:
            se2 += c.std ** 2 / c.n
        its = _iterations_of(suite, job, rec, override)
        budget = its / c.iterations if (its and c.iterations) else None
        out.append(ClaimCheck(c, fig, round(fig["acc_mean"] - c.value, 2), round(se2 ** 0.5, 2), budget, its,
                              rec.get("protocol") or job_protocol(job), suite.name))
    return out


def job_protocol(job: Job) -> str | None:
    """The evaluation protocol a job's command names (``--protocol P`` or ``eval.preset=P``)."""
    args = list(job.args)
    if "--protocol" in args:
        return args[args.index("--protocol") + 1]
    return next((a.split("=", 1)[1] for a in args if a.startswith("eval.preset=")), None)


def _iterations_of(suite: Suite, job: Job, rec: dict, override: Path | None) -> int | None:
    """The distillation iterations of the set a job scores: its own record's, or its source job's."""
    if "iterations" in rec and job.kind == "distill":
        return rec["iterations"]
    if job.of:
        src = suite.job(job.of)
        srec = latest_record(src, override)
        if srec is not None:
            return srec.get("iterations")
    return None
