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

import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

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
    # an application (`datadistill apps APP`): its summary, the sets it compares named in ``args``
    "app": ({"app", "dataset"}, {"needs"}),
}
COMMON = {"id", "kind", "results", "args", "expected", "paper"}


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
    app: str | None = None  # app jobs: continual, privacy or nas
    full: str | None = None  # score jobs: the ``full`` job whose record is the whole-data reference
    extra: dict = field(default_factory=dict)
    paper: dict | None = None  # the paper's own figure for this setting: value, std, source


@dataclass(frozen=True)
class Suite:
    name: str
    path: Path
    jobs: tuple[Job, ...]
    filling: bool = False  # jobs still gain their first record (and from it their expectation)

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
    return Suite(str(doc.get("suite") or path.stem), path, tuple(jobs), bool(doc.get("filling", False)))


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
    fields = {k: raw[k] for k in required | optional if k in raw}
    if "ipc" in fields:
        fields["ipc"] = int(fields["ipc"])
    return Job(id=str(raw["id"]), kind=kind, results=str(raw["results"]), args=tuple(str(a) for a in args),
               expected=exp, paper=paper, **fields)


def results_path(job: Job, override: Path | None = None) -> Path:
    return override if override is not None else RESULTS_DIR / job.results


def read_records(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                raise SuiteError(f"{path}:{n}: not a JSON line") from None
    return out


def latest_record(job: Job, override: Path | None = None) -> dict | None:
    """The job's newest record (the last line naming it; for an evaluation of several models, the
    job's own model when it names one)."""
    rows = [r for r in read_records(results_path(job, override)) if r.get("job") == job.id]
    if job.model:
        rows = [r for r in rows if r.get("model") == job.model] or rows
    return rows[-1] if rows else None


@dataclass(frozen=True)
class Verdict:
    job: Job
    status: str  # ok | regression | not run | no expectation | no figure
    measured: float | None = None
    record: dict | None = None

    def line(self) -> str:
        e = self.job.expected
        if self.status in ("ok", "regression"):
            return (f"{self.status:<10} {self.job.id}: {e.metric} {self.measured:.2f} vs expected {e.value:.2f} "
                    f"- {e.tolerance:g} (commit {self.record.get('commit', '?')})")
        return f"{self.status:<10} {self.job.id}"


def check(jobs: list[Job], override: Path | None = None) -> list[Verdict]:
    out = []
    for job in jobs:
        rec = latest_record(job, override)
        if job.expected is None:
            out.append(Verdict(job, "no expectation", None, rec))
        elif rec is None:
            out.append(Verdict(job, "not run"))
        elif job.expected.metric not in rec:
            out.append(Verdict(job, "no figure", None, rec))
        else:
            got = float(rec[job.expected.metric])
            out.append(Verdict(job, "ok" if got >= job.expected.floor else "regression", got, rec))
    return out
