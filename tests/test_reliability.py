"""Kills and fuzzing, the fast variants of `benchmarks/killtest.py` (3 kills on digits, for DC, DD
and MTT) and `benchmarks/fuzz.py` (a few inputs per target); the benchmarks run the full counts."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import fuzz  # noqa: E402
import killtest  # noqa: E402


@pytest.mark.parametrize("method", ["dc", "dd", "mtt"])
def test_a_run_killed_three_times_ends_bit_identical(method, tmp_path):
    rec = killtest.killtest(killtest.targets(tmp_path)[method], tmp_path, kills=3, seed=1, log=lambda *_: None)
    assert rec["kills"] == 3 and rec["copies"] >= 1
    assert rec["identical"] == rec["copies"]  # every copy's final tensors and accuracies, bit for bit


@pytest.mark.parametrize("target", fuzz.TARGETS)
def test_fuzzed_input_is_a_valid_run_or_one_line(target):
    counts = fuzz.fuzz(target, examples=12)
    assert counts["failure"] == 0, counts["failures"]
    assert counts["inputs"] == 12 and counts["user_error"] > 0


def test_the_fuzzer_catches_a_traceback_and_a_stray_file(monkeypatch):
    """The checks can fail: a command that raises, and one that errs after writing a file."""
    from datadistill import cli

    monkeypatch.setattr(cli, "parse_args", lambda argv: (_ for _ in ()).throw(RuntimeError("a bug")))
    assert fuzz.run_cli(["list", "models"])["outcome"] == "failure"
    monkeypatch.undo()

    def writes_then_errs(argv):
        Path("stray.txt").write_text("x")
        from datadistill.config import ConfigError

        raise ConfigError("bad")

    from datadistill.cli import listing

    monkeypatch.setitem(listing.HANDLERS, "list", writes_then_errs)
    r = fuzz.run_cli(["list", "models"])
    assert r["outcome"] == "failure" and "stray.txt" in r["why"]


def test_appended_lines_stay_whole_and_a_torn_one_is_dropped_once(tmp_path):
    import warnings

    from datadistill.fileio import TornLineWarning, append_jsonl, read_jsonl

    path = tmp_path / "r.jsonl"
    append_jsonl(path, {"i": 1})
    with open(path, "a") as f:
        f.write('{"i": 2, "cut')  # a writer killed mid-line
    with pytest.warns(TornLineWarning):
        assert read_jsonl(path) == [{"i": 1}]
    with pytest.warns(TornLineWarning):
        append_jsonl(path, {"i": 3})
    assert path.read_text() == '{"i": 1}\n{"i": 3}\n'
    with open(path, "a") as f:
        f.write('{"i": 4}')  # whole, only its newline missing (edited by hand): kept
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        append_jsonl(path, {"i": 5})
        assert read_jsonl(path) == [{"i": 1}, {"i": 3}, {"i": 4}, {"i": 5}]
    path.write_text('{"i": 1}\nnot json\n{"i": 2}\n')
    with pytest.raises(ValueError, match="r.jsonl:2: not a JSON line"):
        read_jsonl(path)


WRITER = """import sys
from datadistill.fileio import append_jsonl
for i in range(int(sys.argv[3])):
    append_jsonl(sys.argv[1], {"writer": int(sys.argv[2]), "i": i, "pad": "x" * 5000})
"""


def test_concurrent_writers_never_interleave_their_lines(tmp_path):
    import json
    import subprocess

    path = tmp_path / "shared.jsonl"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(w), "150"]) for w in range(4)]
    assert all(p.wait(timeout=120) == 0 for p in writers)
    rows = [json.loads(line) for line in path.read_text().splitlines()]  # every line whole
    assert sorted((r["writer"], r["i"]) for r in rows) == [(w, i) for w in range(4) for i in range(150)]
