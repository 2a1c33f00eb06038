"""Fuzz what a user hands datadistill: distilled-set files, YAML configs, ``key=value`` overrides and
whole command lines (`hypothesis` draws them).

    python benchmarks/fuzz.py                       # 10,000 inputs per target, one record each
    python benchmarks/fuzz.py setfile --examples 500 --no-record

Each input runs the command line in this process, in a fresh empty folder. It must end one of two
ways: a valid run, or a user error, which is exit status 2 with one line ``datadistill: error: ...``
(or argparse's one line) and the folder left as it was. Anything else is a failure: a traceback, a
second line, a stray file. A valid run is cut short where it would start training (every training
path steps a torch optimizer; the fuzzer makes that step raise), so that an input costs milliseconds.

Targets:
- ``setfile``: a small valid set file, truncated, with bytes flipped, its safetensors header edited
  (dtypes, shapes, offsets, metadata) or replaced by random bytes, through ``datadistill show``;
- ``config``: a YAML preset of random keys and values (the run config's own keys among them) through
  ``datadistill distill --preset FILE``;
- ``overrides``: ``key=value`` overrides of random dotted keys and values on a valid small run;
- ``argv``: command lines drawn from every subcommand's flags and plausible or odd values.

Each target writes one record to benchmarks/results/fuzz.jsonl: inputs, valid runs, user errors,
failures (0 is the goal; each failure's input and traceback are printed), files left behind.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import struct
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "fuzz.jsonl"
TARGETS = ("setfile", "config", "overrides", "argv")


class WouldTrain(BaseException):
    """Raised by a torch optimizer's step during fuzzing: the input made a valid run (a BaseException,
    so that no ``except Exception`` of the code under test mistakes it for its own error)."""


@contextlib.contextmanager
def no_training():
    import torch

    def stop(*a: Any, **k: Any) -> None:
        raise WouldTrain

    classes = [torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW]
    saved = [c.step for c in classes]
    for c in classes:
        c.step = stop
    try:
        yield
    finally:
        for c, s in zip(classes, saved):
            c.step = s


def files_under(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*")}


def run_cli(argv: list[str], inputs: dict[str, bytes] | None = None) -> dict[str, Any]:
    """``datadistill ARGV`` in a fresh folder holding ``inputs`` (name -> bytes): its outcome, ``valid``,
    ``user_error`` or ``failure`` (with why)."""
    from datadistill.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for name, data in (inputs or {}).items():
            (d / name).write_bytes(data)
        before = files_under(d)
        err, out = io.StringIO(), io.StringIO()
        cwd = os.getcwd()
        os.chdir(d)
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out), no_training():
                try:
                    rc = main(argv)
                except SystemExit as e:  # argparse: --help (0) or a usage error (2)
                    rc = e.code if isinstance(e.code, int) else 2
        except WouldTrain:
            return {"outcome": "valid"}
        except BaseException as e:  # noqa: BLE001  (everything else is what the fuzzer is looking for)
            if isinstance(e, KeyboardInterrupt):
                raise
            return {"outcome": "failure", "why": "exception", "traceback": traceback.format_exc(), "argv": argv}
        finally:
            os.chdir(cwd)
        if rc == 0:
            return {"outcome": "valid"}
        lines = [x for x in err.getvalue().splitlines() if x.strip()]
        errors = [x for x in lines if ": error: " in x]
        if rc != 2 or len(errors) != 1 or any(x.startswith("Traceback") for x in lines):
            return {"outcome": "failure", "why": f"exit {rc}, stderr {lines[-5:]}", "argv": argv}
        left = files_under(d) - before
        if left:
            return {"outcome": "failure", "why": f"left behind {sorted(left)[:5]}", "argv": argv, "left": True}
        return {"outcome": "user_error"}


# -- inputs --------------------------------------------------------------------------------------------
_SET: bytes | None = None


def valid_set() -> bytes:
    """A small valid distilled-set file (random real digits, one per class)."""
    global _SET
    if _SET is None:
        import torch

        from datadistill.data import load_dataset
        from datadistill.synset import PixelSet, save_synset

        data = load_dataset("digits")
        s = PixelSet.from_real(data.train, 1, torch.Generator().manual_seed(0))
        with tempfile.TemporaryDirectory() as tmp:
            path = save_synset(Path(tmp) / "s.safetensors", s, data.spec, method="random")
            _SET = Path(path).read_bytes()
    return _SET


def split_header(blob: bytes) -> tuple[dict, bytes]:
    n = struct.unpack("<Q", blob[:8])[0]
    return json.loads(blob[8 : 8 + n]), blob[8 + n :]


def join_header(header: dict, body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


json_values = st.recursive(st.none() | st.booleans() | st.integers(-3, 40) | st.floats(allow_nan=True)
                           | st.text(max_size=12), lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=6)


@st.composite
def set_files(draw) -> bytes:
    blob = valid_set()
    kind = draw(st.sampled_from(["truncate", "flip", "header", "metadata", "random"]))
    if kind == "truncate":
        return blob[: draw(st.integers(0, len(blob) - 1))]
    if kind == "random":
        return draw(st.binary(max_size=400))
    if kind == "flip":
        data = bytearray(blob)
        n = 8 + struct.unpack("<Q", blob[:8])[0]
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, n - 1))] = draw(st.integers(0, 255))
        return bytes(data)
    header, body = split_header(blob)
    if kind == "header":
        key = draw(st.sampled_from(sorted(k for k in header if k != "__metadata__")))
        field = draw(st.sampled_from(["dtype", "shape", "data_offsets", "drop", "add"]))
        if field == "dtype":
            header[key]["dtype"] = draw(st.sampled_from(["F16", "BF16", "F64", "I64", "I8", "U8", "BOOL", "XX", ""]))
        elif field == "shape":
            header[key]["shape"] = draw(st.lists(st.integers(-2, 10**7), max_size=5))
        elif field == "data_offsets":
            header[key]["data_offsets"] = draw(st.lists(st.integers(-5, len(body) + 50), min_size=0, max_size=3))
        elif field == "drop":
            del header[key]
        else:
            header[draw(st.text(max_size=8))] = draw(json_values)
        return join_header(header, body)
    meta = dict(header.get("__metadata__", {}))
    inner = json.loads(meta["datadistill"]) if "datadistill" in meta else {}
    edit = draw(st.sampled_from(["drop", "set", "text", "nested"]))
    if edit == "drop" and inner:
        del inner[draw(st.sampled_from(sorted(inner)))]
    elif edit == "set" and inner:
        inner[draw(st.sampled_from(sorted(inner)))] = draw(json_values)
    elif edit == "nested" and isinstance(inner.get("spec"), dict) and inner["spec"]:
        inner["spec"][draw(st.sampled_from(sorted(inner["spec"])))] = draw(json_values)
    if edit == "text":
        meta["datadistill"] = draw(st.text(max_size=40))
    else:
        meta["datadistill"] = json.dumps(inner)
    header["__metadata__"] = meta
    return join_header(header, body)


RUN_KEYS = ["dataset", "method", "ipc", "iterations", "seed", "image_init", "zca", "eval_every", "models",
            "checkpoint_every", "dataset_options", "method_config", "eval", "data_root", "device", "init",
            "eval_models_during"]
METHODS = ["dm", "dc", "dsa", "random", "herding", "kcenter", "mtt", "dd", "haba", "frepo", "rded", "datm"]
values = st.one_of(st.sampled_from(["digits", "procedural", "mnist2", "dm", "random", "real", "noise", "cpu", "cuda",
                                    "auto", "null", "[]", "{}", "1e9", "-1", "0", "nan", "convnet", "mlp"]),
                   st.integers(-3, 40), st.floats(-1e3, 1e3) | st.just(float("nan")), st.booleans(), st.none(),
                   st.text(max_size=10))


@st.composite
def configs(draw) -> bytes:
    doc: dict[str, Any] = {"dataset": draw(st.sampled_from(["digits", "procedural", "nosuch"])),
                           "method": draw(st.sampled_from(METHODS)), "ipc": draw(st.integers(-1, 3))}
    for _ in range(draw(st.integers(0, 4))):
        key = draw(st.sampled_from(RUN_KEYS) | st.text(max_size=8))
        doc[key] = draw(values | st.dictionaries(st.sampled_from(["model", "epochs", "lr", "batch_real", "preset",
                                                                  "n_models", "size", "per_class", "x"]),
                                                 values, max_size=3))
    if draw(st.booleans()):
        return draw(st.text(max_size=60)).encode()  # not even a mapping
    import yaml

    return yaml.safe_dump(doc).encode()


@st.composite
def overrides(draw) -> list[str]:
    out = []
    for _ in range(draw(st.integers(1, 4))):
        head = draw(st.sampled_from(RUN_KEYS + ["method_config", "eval", "dataset_options"]) | st.text(max_size=6))
        tail = draw(st.sampled_from(["", ".model", ".epochs", ".lr", ".batch_real", ".n_models", ".preset", ".x.y",
                                     ".size", ".per_class", "."]))
        value = draw(values)
        out.append(f"{head}{tail}={value if isinstance(value, str) else json.dumps(value)}")
    return out


SUBCOMMANDS = {
    "distill": ["--dataset", "--method", "--ipc", "--iterations", "--image-init", "--net-init", "--eval-every",
                "--models", "--seed", "--zca", "--device", "--preset", "--resume", "--force", "--no-progress"],
    "evaluate": ["--models", "--protocol", "--full", "--dataset", "--scores", "--batch-models", "--executor",
                 "--workers", "--threads", "--json", "--save", "--work-dir"],
    "show": ["--out"], "export": ["--overwrite"], "list": [],
    "experts": ["--dataset", "--model", "--experts", "--epochs", "--lr", "--augment", "--zca", "--indices", "--out"],
    "study": ["--dataset", "--ipcs", "--protocol", "--out", "--executor"],
    "teacher": ["--dataset", "--model", "--epochs", "--out", "--force"],
    "import": ["--from", "--dataset", "--out", "--lr", "--zca", "--ipc"],
}


@st.composite
def argvs(draw) -> tuple[list[str], dict[str, bytes]]:
    sub = draw(st.sampled_from(sorted(SUBCOMMANDS)))
    argv = [sub]
    if sub == "study":
        argv.append(draw(st.sampled_from(["ipc-curve", "continual", "nas", "privacy", "nosuch"])))
    if sub == "list":
        argv.append(draw(st.sampled_from(["models", "methods", "datasets", "presets", "protocols", "x"])))
    if sub in ("evaluate", "show", "export", "import") and draw(st.booleans()):
        argv.append(draw(st.sampled_from(["set.safetensors", "missing.safetensors", "set.safetensors"])))
    if sub == "export":
        argv.append(draw(st.sampled_from(["tree", "set.safetensors", "tree/sub"])))
    for _ in range(draw(st.integers(0, 5))):
        flag = draw(st.sampled_from(SUBCOMMANDS[sub] or ["--x"]) | st.sampled_from(["--help", "-x", "--zz"]))
        argv.append(flag)
        if draw(st.booleans()):
            v = draw(values)
            argv.append(v if isinstance(v, str) else json.dumps(v))
    if draw(st.booleans()):
        argv += draw(overrides())
    return argv, {"set.safetensors": valid_set()}


# -- running ---------------------------------------------------------------------------------------------
def check_one(target: str, example: Any) -> dict[str, Any]:
    if target == "setfile":
        return run_cli(["show", "set.safetensors", "--out", "view.png"], {"set.safetensors": example})
    if target == "config":
        return run_cli(["distill", "--preset", "c.yaml", "--no-progress", "--out", "run"], {"c.yaml": example})
    if target == "overrides":
        return run_cli(["distill", "--dataset", "digits", "--method", "dm", "--ipc", "1", "--iterations", "1",
                        "--no-progress", "--out", "run", *example])
    argv, inputs = example
    return run_cli(argv, inputs)


STRATEGIES = {"setfile": set_files, "config": configs, "overrides": overrides, "argv": argvs}


def fuzz(target: str, examples: int, seed: int = 0, report=print) -> dict[str, Any]:
    """``examples`` inputs of ``target``: counts of each outcome; each failure reported (input, why)."""
    counts = {"inputs": 0, "valid": 0, "user_error": 0, "failure": 0, "left_behind": 0}
    failures: list[dict[str, Any]] = []

    @settings(max_examples=examples, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(STRATEGIES[target]())
    def one(example):
        r = check_one(target, example)
        counts["inputs"] += 1
        counts[r["outcome"]] += 1
        if r.get("left"):
            counts["left_behind"] += 1
        if r["outcome"] == "failure":
            failures.append(r)
            shown = example if not isinstance(example, bytes) else f"<{len(example)} bytes>"
            report(f"FAILURE {target}: {r.get('why')} for {str(shown)[:300]}\n{r.get('traceback', '')}")

    import random

    random.seed(seed)
    one()
    return {**counts, "failures": failures[:5]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("targets", nargs="*", default=list(TARGETS), help=f"some of {', '.join(TARGETS)} (default: all)")
    p.add_argument("--examples", type=int, default=10_000)
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--no-record", action="store_true")
    a = p.parse_args(argv)
    bad = [t for t in a.targets if t not in TARGETS]
    if bad:
        print(f"error: unknown target {bad[0]!r}; valid: {', '.join(TARGETS)}", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from run import commit, machine  # noqa: PLC0415

    from datadistill.fileio import append_jsonl  # noqa: PLC0415

    import time

    failed = 0
    for t in a.targets:
        t0 = time.perf_counter()
        counts = fuzz(t, a.examples)
        rec = {"target": t, **{k: v for k, v in counts.items() if k != "failures"},
               "failure_examples": [{k: v for k, v in f.items() if k != "traceback"} for f in counts["failures"]],
               "seconds": round(time.perf_counter() - t0, 1), "commit": commit(), **machine(),
               "command": f"python benchmarks/fuzz.py {t} --examples {a.examples}"}
        failed += counts["failure"]
        print(json.dumps(rec), flush=True)
        if not a.no_record:
            append_jsonl(a.results, rec)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
