"""Every result figure in README.md and docs/ comes from a record or a claim.

A *record* is a JSON line of benchmarks/results/*.jsonl; a *claim* is a paper's published figure
stored in a suite (`claims()`: a suite's ``claims:`` list, and the older per-job ``paper:``). A
figure that neither holds is a number someone typed: it cannot be regenerated and goes stale
unnoticed (STYLE.md, rule 13).

**Figures checked**, in README.md and docs/**/*.md but docs/results.md (which benchmarks/report.py
writes from the records; ``report.py --check`` is its test, too slow here):

- decimal numbers in prose, tables, footnotes and the ``# comments`` of code blocks: ``94.50``,
  ``0.14``, ``12.5 min``, ``1.8x``, ``-2.3``; ``94.50 ± 0.14`` is one figure, a pair;
- durations written ``12 min 26 s`` or ``1 h 5 min``.

**Not checked**: code (blocks, but for their comments, and spans: commands and settings such as
``lr=0.01``), link targets and URLs, HTML comments, versions (``2.14.1``), scientific notation
(``5e-4``: settings), a decimal right after a setting's or a reference's name (`SETTING`: ``lr
0.01``, ``momentum 0.5``, ``betas (0.5, 0.999)``, ``Python 3.11``, ``Section 4.2``, ``arXiv:...``),
and integers (mostly budgets, ``300 epochs``, which the records name anyway).

**Held**, at the precision written (the figure's d decimals; signs ignored, a difference may be
written either way):

- a ``mean ± std`` by one record's pair (``acc_mean``/``acc_std``, ``X``/``X_std``), the pool of a
  job's reruns (`pool`, as report.py shows them: ``80.83 ± 1.36 (2 runs)``) or one claim's value
  and std;
- a time (a figure followed by s, min, h or ms, or a duration) by a record's field of seconds
  (``wall_seconds``, ``seconds_per_iteration``, ...: `TIME_FIELD`) in that unit, or of hours;
- any other figure by any numeric field of any record (nested mappings included, list elements
  not: thousands of per-model accuracies and ROC points would hold anything; the short summary
  lists of ``SUMMARY_LISTS``, such as a timing's load averages, aside) or a claim's value or std;
- or as the difference or ratio of two held figures of the same paragraph, as far as their rounding
  allows: the docs show the operands beside it.

A figure written with one decimal is held by chance more often than not (half of 0.0-99.9 is some
record's number), so the check is strict for pairs, times and two-decimal figures and weak for
single one-decimal ones: write a result as its record's ``mean ± std``, or link it.

**Linked figures**: ``[94.50 ± 0.14](benchmarks/results/dm_cpu.jsonl#L6)`` must be that record's
(or the pool of the ``(N runs)`` ending there), and the line must exist; in docs/results.md too.

Figures that are not results and that `SETTING` misses go in tests/figures_allowed.yaml, each with
its file and reason; an entry fails once its figure is gone from its file or once a record or a
claim holds it, so that the list stays short and reviewed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SUITES = ROOT / "benchmarks" / "suites"
ALLOWED = Path(__file__).with_name("figures_allowed.yaml")
GENERATED = "docs/results.md"
Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# a decimal number, not part of a word, a version (2.14.1) or scientific notation (2.5e-4)
DECIMAL = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)\.(\d+)(?![\d.]*\d)(?!e[-+]?\d)(?![A-Za-rt-wyz_])")
DURATION = re.compile(r"(?<![\w.])(\d+) (h|min) (\d+) (min|s)\b")
UNIT = re.compile(r"^\s*(s|seconds?|min|minutes?|h|hours?|ms)\b")
TO_UNIT = {"s": 1.0, "second": 1.0, "seconds": 1.0, "min": 1 / 60, "minute": 1 / 60, "minutes": 1 / 60,
           "h": 1 / 3600, "hour": 1 / 3600, "hours": 1 / 3600, "ms": 1000}
# a record's time fields (in seconds, or in hours when the name says so)
TIME_FIELD = re.compile(r"(seconds|_s$|^s$|wall)")
HOUR_FIELD = re.compile(r"hours")
# a setting's or a reference's name right before a decimal: the decimal is not a result
SETTING = re.compile(
    r"(?:\b(?:lr|lr_\w+|learning[ -]rates?|momentum|weight decay|temperature|regulari[sz]ation|dropout|"
    r"ZCA|alpha|beta|epsilon|Python|PyTorch|torch|torchvision|version|Section|Sec\.|Eq\.|"
    r"Equation|Algorithm|Appendix|Figure|Fig\.|Table|arXiv|betas?)|§)\s*(?:of|=|:|is|to)?\s*[(]?"
    r"(?:\d+\.\d+\s*(?:,\s*|/|\())*$", re.IGNORECASE)  # also a list: betas (0.5, 0.999), Python 3.11 (3.10+


@dataclass(frozen=True)
class Figure:
    file: str
    line: int
    text: str  # as written, e.g. "94.50", "94.50 ± 0.14" or "12 min 26 s"
    value: float  # the number (seconds for a duration; the mean of a mean ± std)
    decimals: int  # -1 for a duration
    unit: str | None = None  # min, h or ms when the figure is followed by one
    paragraph: int = 0  # figures of one paragraph share this number
    std: float | None = None  # a mean ± std: the std, with its own decimals
    std_decimals: int = 0

    def where(self) -> str:
        return f"{self.file}:{self.line}: {self.text}"


# -- where figures come from ----------------------------------------------------------------------

# lists that are summaries, not samples: main_job.py's load averages before a run (1, 5, 15 minutes),
# speed_kernels.py's timings of one block at six shapes (a mapping each)
SUMMARY_LISTS = frozenset({"load_before", "blocks"})


def numbers(x, key: re.Pattern | None = None) -> list[float]:
    """The numeric fields of a record (those whose name matches ``key``, if given), nested ones
    included. Not the elements of lists (each model's accuracy as a fraction, seeds, ROC curves):
    the docs quote a record's summaries, and thousands of list elements would hold almost any figure
    by chance; the few short lists of summaries in ``SUMMARY_LISTS`` aside. Booleans are not numbers."""
    if not isinstance(x, dict):
        return []
    out = []
    for k, y in x.items():
        if isinstance(y, (int, float)) and not isinstance(y, bool) and (key is None or key.search(k)):
            out.append(float(y))
        elif isinstance(y, dict):
            out += numbers(y, key)
        elif k in SUMMARY_LISTS and isinstance(y, list) and key is None:
            out += [float(v) for v in y if isinstance(v, (int, float)) and not isinstance(v, bool)]
            out += [n for v in y if isinstance(v, dict) for n in numbers(v)]
    return out


def pairs(x) -> list[tuple[float, float]]:
    """The (mean, std) pairs of a record: a field ``X_std`` (or ``std``) with ``X``, ``X_mean`` or
    ``X`` less ``_std`` plus ``_mean`` (``acc_mean``, ``acc_std``), in any nested mapping."""
    if not isinstance(x, dict):
        return []
    out = [p for y in x.values() for p in pairs(y)]
    for k, std in x.items():
        if not (k == "std" or k.endswith("_std")) or not isinstance(std, (int, float)) or isinstance(std, bool):
            continue
        base = k[:-3].rstrip("_")
        for m in (base, f"{base}_mean" if base else "mean", "value" if not base else base):
            if isinstance(x.get(m), (int, float)) and not isinstance(x.get(m), bool):
                out.append((float(x[m]), float(std)))
                break
    return out


@lru_cache(maxsize=1)
def records() -> tuple[dict, ...]:
    return tuple(json.loads(line) for path in sorted(RESULTS.glob("*.jsonl"))
                 for line in path.read_text().splitlines() if line.strip())


def pool(runs: list[dict]) -> tuple[float, float]:
    """A job's reruns as one figure, as benchmarks/report.py shows it (``80.83 ± 1.36 (2 runs)``, see
    `suites.pooled`): the mean and population std of every evaluated model's accuracy over the runs."""
    accs = [a for r in runs for a in (r.get("accuracies") or [r["acc_mean"]])]
    mean = sum(accs) / len(accs)
    return mean, (sum((a - mean) ** 2 for a in accs) / len(accs)) ** 0.5


def rerun_key(r: dict) -> tuple:
    return r.get("job"), r.get("command"), r.get("model")


@lru_cache(maxsize=1)
def pools() -> tuple[tuple[float, float], ...]:
    """The pooled figure of every job with reruns (records of one file with the same job, command
    and model)."""
    out = []
    for path in sorted(RESULTS.glob("*.jsonl")):
        groups: dict[tuple, list[dict]] = {}
        for line in path.read_text().splitlines():
            r = json.loads(line) if line.strip() else {}
            if "acc_mean" in r and r.get("job"):
                groups.setdefault(rerun_key(r), []).append(r)
        out += [pool(runs) for runs in groups.values() if len(runs) > 1]
    return tuple(out)


def claims() -> list[dict]:
    """The papers' published figures stored in the suites, as ``{value, std}`` mappings: a suite's
    `claims:` list, and the older per-job form (a job's `paper: {value, std, source}`)."""
    out = []
    for path in sorted(SUITES.glob("*.yaml")):
        doc = yaml.load(path.read_text(), Loader=Loader) or {}
        out += [c for c in doc.get("claims") or [] if isinstance(c, dict)]
        out += [j["paper"] for j in doc.get("jobs") or [] if isinstance(j, dict) and isinstance(j.get("paper"), dict)]
    return [{k: float(c[k]) for k in ("value", "std") if isinstance(c.get(k), (int, float))} for c in out]


@lru_cache(maxsize=None)
def sources(kind: str = "any") -> tuple[float, ...]:
    """Every number that holds a figure alone: records' numeric fields and claims' values and stds;
    for a time, records' fields of seconds (``kind="time"``) or of hours (``"hours"``) only."""
    if kind in ("time", "hours"):
        return tuple(v for r in records() for v in numbers(r, TIME_FIELD if kind == "time" else HOUR_FIELD))
    return tuple(v for r in records() for v in numbers(r)) + tuple(v for c in claims() for v in c.values())


@lru_cache(maxsize=1)
def source_pairs() -> tuple[tuple[float, float], ...]:
    """Every (mean, std) that holds a ``mean ± std`` figure: records' pairs, the pools of reruns,
    claims' value and std."""
    return (tuple(p for r in records() for p in pairs(r)) + pools()
            + tuple((c["value"], c["std"]) for c in claims() if len(c) == 2))


@lru_cache(maxsize=None)
def held_as(decimals: int, scale: float = 1.0, kind: str = "any") -> frozenset[str]:
    """Every number of ``sources(kind)``, times ``scale``, printed with ``decimals`` decimals."""
    return frozenset(f"{abs(v * scale):.{decimals}f}" for v in sources(kind))


@lru_cache(maxsize=None)
def held_pairs(decimals: int, std_decimals: int) -> frozenset[tuple[str, str]]:
    return frozenset((printed(m, decimals), printed(s, std_decimals)) for m, s in source_pairs())


def printed(value: float, decimals: int) -> str:
    return f"{abs(value):.{decimals}f}"


# -- figures in a Markdown file -------------------------------------------------------------------

FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"(`+)(?:(?!\n[ \t]*\n)[^`]|(?!\1)`)*?\1")  # within a paragraph
LINK_TARGET = re.compile(r"\]\([^)]*\)")
URL = re.compile(r"<?https?://\S+")
COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
CODE_COMMENT = re.compile(r"(?<!\S)#\s.*$")
PLUS_MINUS = re.compile(r"\s*%?\s*±\s*")


def prose(text: str) -> list[str]:
    """The file's lines with code (blocks, but for their ``# comments``, and spans, also those that
    wrap), link targets, URLs and HTML comments blanked out (the line numbers stay)."""
    text = COMMENT.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    out, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            out.append("")
        elif fenced:  # a comment in a code block is prose: "make distill  # ... (12.5 min on 2 cores)"
            m = CODE_COMMENT.search(line)
            out.append(" " * m.start() + m.group(0) if m else "")
        else:
            out.append(line)
    joined = "\n".join(out)
    for pattern in (CODE_SPAN, LINK_TARGET, URL):
        joined = pattern.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), joined)
    return joined.split("\n")


def figures(path: Path) -> list[Figure]:
    """The figures of a Markdown file, paragraph by paragraph (a ``mean ±`` may end a line and its
    std start the next)."""
    rel = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)
    lines = prose(path.read_text())
    out, start = [], 0
    for k, line in enumerate(lines + [""]):
        if line.strip():
            continue
        if k > start:
            out += paragraph_figures(rel, start + 1, "\n".join(lines[start:k]), k)
        start = k + 1
    return out


def paragraph_figures(rel: str, first: int, text: str, paragraph: int) -> list[Figure]:
    def line(pos: int) -> int:
        return first + text.count("\n", 0, pos)

    out = []
    for m in DURATION.finditer(text):
        big, small = int(m.group(1)), int(m.group(3))
        seconds = big * 3600 + small * 60 if m.group(2) == "h" else big * 60 + small
        out.append(Figure(rel, line(m.start()), m.group(0), float(seconds), -1, m.group(2), paragraph))
    found = [m for m in DECIMAL.finditer(text) if not SETTING.search(text[max(0, m.start() - 40):m.start()])]
    i = 0
    while i < len(found):
        m = found[i]
        unit = UNIT.match(text[m.end():])
        f = Figure(rel, line(m.start()), m.group(0), number(m.group(0)), len(m.group(2)),
                   unit.group(1) if unit else None, paragraph)
        if i + 1 < len(found) and PLUS_MINUS.fullmatch(text[m.end():found[i + 1].start()]):
            s = found[i + 1]
            f = Figure(rel, f.line, " ".join(text[m.start():s.end()].split()), f.value, f.decimals, f.unit, paragraph,
                       number(s.group(0)), len(s.group(2)))
            i += 1
        out.append(f)
        i += 1
    return sorted(out, key=lambda f: f.line)


def number(text: str) -> float:
    return float(text.replace(",", ""))


def held_alone(f: Figure) -> bool:
    if f.decimals < 0:  # a duration: a time field in seconds, to the second (or the minute, for h min)
        if f.unit == "min":
            return printed(f.value, 0) in held_as(0, 1.0, "time")
        return printed(f.value / 60, 0) in held_as(0, 1 / 60, "time")
    text = printed(f.value, f.decimals)
    if f.std is not None:  # held as a pair, by one record or one claim
        return (text, printed(f.std, f.std_decimals)) in held_pairs(f.decimals, f.std_decimals)
    if f.unit is not None:  # a time: a record's time field, in that unit
        return text in held_as(f.decimals, TO_UNIT[f.unit], "time") or (
            f.unit.startswith("h") and text in held_as(f.decimals, 1.0, "hours"))
    return text in held_as(f.decimals)


def held_derived(f: Figure, others: list[Figure]) -> bool:
    """The difference or ratio of two held decimal figures of the same paragraph, as far as their
    rounding allows (``1.42x`` from ``3.71`` and ``2.60``: 3.705/2.605 to 3.715/2.595)."""
    if f.decimals < 0 or f.std is not None:  # a duration or a mean ± std is never derived
        return False
    lo, hi = f.value - half(f.decimals), f.value + half(f.decimals)
    ops = [(o.value, half(o.decimals)) for o in others if o is not f and o.decimals >= 0]
    for i, (a, ea) in enumerate(ops):
        for b, eb in ops[i + 1:]:
            d = abs(a - b)
            spans = [(d - ea - eb, d + ea + eb)]
            for (x, ex), (y, ey) in (((a, ea), (b, eb)), ((b, eb), (a, ea))):
                if y - ey > 0:
                    spans.append(((x - ex) / (y + ey), (x + ex) / (y - ey)))
            if any(s_lo <= hi and lo <= s_hi for s_lo, s_hi in spans):
                return True
    return False


def half(decimals: int) -> float:
    """Half a unit of the last decimal written: the rounding of a figure with ``decimals`` decimals."""
    return 0.5 * 10.0 ** -decimals


def unheld(paths: list[Path]) -> list[Figure]:
    out = []
    for path in paths:
        found = figures(path)
        alone = {id(f): held_alone(f) for f in found}
        for f in found:
            if alone[id(f)]:
                continue
            mates = [o for o in found if o.paragraph == f.paragraph and alone[id(o)]]
            if not held_derived(f, mates):
                out.append(f)
    return out


# -- figures linked to their record ------------------------------------------------------------------

POOLED = re.compile(r"\((\d+) runs\)")
RECORD_LINK = re.compile(r"\[([^\]\n]*)\]\(((?:\.\./)*benchmarks/results/([\w.-]+\.jsonl)#L(\d+))\)")


@dataclass(frozen=True)
class RecordLink:
    line: int
    target: str
    file: str
    line_no: int
    figures: tuple[Figure, ...]
    runs: int = 1  # "(N runs)": a pool of the job's reruns, the link naming the latest


def record_links(path: Path) -> list[RecordLink]:
    """The links to a record line (``benchmarks/results/X.jsonl#LN``) outside code, with the
    figures of their text."""
    out, fenced = [], False
    for n, line in enumerate(COMMENT.sub("", path.read_text()).splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
        if fenced:
            continue
        line = CODE_SPAN.sub(lambda m: " " * len(m.group(0)), line)
        for m in RECORD_LINK.finditer(line):
            runs = POOLED.search(m.group(1))
            figs = tuple(paragraph_figures(str(path), n, m.group(1), 0))
            out.append(RecordLink(n, m.group(2), m.group(3), int(m.group(4)), figs, int(runs.group(1)) if runs else 1))
    return out


@lru_cache(maxsize=None)
def record_lines(name: str) -> tuple[str, ...]:
    path = RESULTS / name
    return tuple(path.read_text().splitlines()) if path.is_file() else ()


def record_at(name: str, line_no: int) -> dict | None:
    lines = record_lines(name)
    if not 1 <= line_no <= len(lines) or not lines[line_no - 1].strip():
        return None
    return json.loads(lines[line_no - 1])


def reruns_until(name: str, line_no: int) -> list[dict]:
    """The reruns of the record at ``name``:``line_no`` up to it (same job, command and model)."""
    last = record_at(name, line_no)
    rows = [json.loads(x) for x in record_lines(name)[:line_no] if x.strip()]
    return [r for r in rows if rerun_key(r) == rerun_key(last)]


def held_by(f: Figure, rec: dict, runs: list[dict] | None = None) -> bool:
    """``f`` is a number of this one record (a pair when ``f`` is a mean ± std), or the pool of
    ``runs`` (`pool`)."""
    if runs is not None and f.std is not None:
        m, sd = pool(runs)
        return (printed(m, f.decimals), printed(sd, f.std_decimals)) == (printed(f.value, f.decimals),
                                                                         printed(f.std, f.std_decimals))
    if f.decimals < 0:
        return printed(f.value, 0) in {printed(v, 0) for v in numbers(rec)}
    text = printed(f.value, f.decimals)
    if f.std is not None:
        return (text, printed(f.std, f.std_decimals)) in {(printed(m, f.decimals), printed(s, f.std_decimals))
                                                            for m, s in pairs(rec)}
    return text in {printed(v, f.decimals) for v in numbers(rec)}


# -- the allow-list ---------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def allowed() -> tuple[dict, ...]:
    entries = yaml.load(ALLOWED.read_text(), Loader=Loader) or []
    return tuple(entries)


def is_allowed(f: Figure) -> bool:
    return any(e["file"] == f.file and str(e["figure"]) == f.text for e in allowed())


def docs() -> list[Path]:
    pages = sorted(p for p in (ROOT / "docs").rglob("*.md") if p.relative_to(ROOT).as_posix() != GENERATED)
    return [ROOT / "README.md", *pages]


def report(bad: list[Figure]) -> str:
    return ("figures that no record (benchmarks/results/*.jsonl) and no claim (benchmarks/suites/*.yaml) hold; "
            "quote a record's figure, or allow-list a figure that is not a result in tests/figures_allowed.yaml "
            "with the reason:\n" + "\n".join(f.where() for f in bad))


# -- tests ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", docs(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_figure_is_held_by_a_record_or_a_claim(path: Path):
    bad = [f for f in unheld([path]) if not is_allowed(f)]
    assert not bad, report(bad)


def test_the_results_page_is_the_generated_one():
    """docs/results.md is checked by its generator (``benchmarks/report.py --check``, too slow for a
    test): here, that it is the generated page, and (below) that its linked figures are their records'."""
    text = (ROOT / GENERATED).read_text()
    assert text.startswith("<!-- generated by `python benchmarks/report.py`"), \
        f"{GENERATED} must be the page benchmarks/report.py writes (it opens with its generated marker)"


@pytest.mark.parametrize("path", [ROOT / GENERATED, *docs()], ids=lambda p: str(p.relative_to(ROOT)))
def test_a_linked_figure_is_its_records(path: Path):
    """``[94.50 ± 0.14](benchmarks/results/dm_cpu.jsonl#L6)``: the record on that line holds the
    figure (as a pair when it is a mean ± std), and the line exists; ``[80.83 ± 1.36 (2 runs)](...#L17)``
    is the pool of the job's 2 reruns ending on that line."""
    bad = []
    for link in record_links(path):
        rec = record_at(link.file, link.line_no)
        if rec is None:
            bad.append(f"{path.relative_to(ROOT)}:{link.line}: {link.target}: no such record")
            continue
        runs = reruns_until(link.file, link.line_no) if link.runs > 1 else None
        if runs is not None and len(runs) != link.runs:
            bad.append(f"{path.relative_to(ROOT)}:{link.line}: {link.target} has {len(runs)} runs, "
                       f"the link says {link.runs}")
            continue
        for f in link.figures:
            if not held_by(f, rec, runs):
                bad.append(f"{path.relative_to(ROOT)}:{link.line}: {f.text} is not "
                           + (f"the pool of the {link.runs} runs ending at " if runs else "in ") + link.target)
    assert not bad, "\n".join(bad)


def test_allowed_figures_are_reviewed_and_still_there():
    for e in allowed():
        assert set(e) == {"file", "figure", "reason"} and str(e["reason"]).strip(), \
            f"tests/figures_allowed.yaml: each entry has file, figure and a reason: {e}"
        path = ROOT / e["file"]
        assert path.is_file(), f"tests/figures_allowed.yaml: {e['file']} does not exist"
        written = [f for f in figures(path) if f.text == str(e["figure"])]
        assert written, \
            f"tests/figures_allowed.yaml: {e['file']} no longer writes {e['figure']} as a figure: remove the entry"
        assert any(f in unheld([path]) for f in written), \
            f"tests/figures_allowed.yaml: {e['file']}: a record or a claim now holds {e['figure']}: remove the entry"


def test_numbers_skip_sample_lists_but_not_summary_lists():
    r = {"acc_mean": 90.0, "accuracies": [0.91, 0.89], "load_before": [1.46, 2.67, 2.89], "x": {"y": 3}}
    assert sorted(numbers(r)) == [1.46, 2.67, 2.89, 3.0, 90.0]


def test_the_check_itself(tmp_path: Path):
    """What counts as a figure, and what holds it, on a small page."""
    page = tmp_path / "page.md"
    page.write_text("Measured 12.5 min and 2.20 s at lr 0.01 (`lr=0.03`), [x](a/b1.5.md) torch 2.14.1, 5e-4,\n"
                    "then 12 min 26 s; 91.3 vs 91.7: 0.4 points, 0.9956x.\n")
    found = figures(page)
    assert [f.text for f in found] == ["12.5", "2.20", "12 min 26 s", "91.3", "91.7", "0.4", "0.9956"]
    assert [f.unit for f in found[:3]] == ["min", "s", "min"] and found[2].value == 746
    assert held_alone(Figure("x", 1, "91.7", 91.7, 1, None, 0))  # DC's claim for MNIST 1/class
    assert held_alone(Figure("x", 1, "91.30", 91.30, 2, None, 0))  # its dc-paper record
    assert not held_alone(Figure("x", 1, "91.31", 91.31, 2, None, 0))
    ours, theirs = Figure("x", 1, "91.3", 91.3, 1, None, 0), Figure("x", 1, "91.7", 91.7, 1, None, 0)
    assert held_derived(Figure("x", 1, "0.4", 0.4, 1, None, 0), [ours, theirs])
    assert not held_derived(Figure("x", 1, "0.7", 0.7, 1, None, 0), [ours, theirs])
    assert not held_derived(Figure("x", 1, "0.4 ± 0.1", 0.4, 1, None, 0, 0.1, 1), [ours, theirs])
    # a time is held by a record's time field only: 91.30 is an accuracy, not 91.30 s
    assert not held_alone(Figure("x", 1, "91.30", 91.30, 2, "s", 0))
    assert held_alone(Figure("x", 1, "200.1", 200.1, 1, "s", 0))  # that record's eval_seconds
