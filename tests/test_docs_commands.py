"""Every command shown in README.md and docs/ runs.

The shell commands of fenced ``bash``/``sh``/``shell``/``console`` blocks are extracted and run at a
tiny size, in order, one working folder per document (so a command can use what an earlier one of
the same page wrote, as a reader would):

* ``datadistill ...`` runs in-process (``datadistill.cli.main``) on the digits set, with tiny budgets
  appended as overrides (2 iterations, 1 evaluation model of 1 epoch, small real batches, tiny pools
  and experts) and must exit 0;
* ``make TARGET`` must be a target (``make -n TARGET``);
* ``python SCRIPT`` must compile, and answer ``--help`` when it uses argparse (a script without it
  would run for real); ``examples/`` scripts run whole (they take seconds);
* ``python`` blocks are executed, one namespace per document, with `datadistill.distill` and
  `get_protocol` shrunk the same way.

Left out: docs/results.md (generated), blocks fenced as ``text``, and commands ending in ``# no-test``.
"""

from __future__ import annotations

import contextlib
import io
import os
import py_compile
import re
import shlex
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHELL_LANGS = {"bash", "sh", "shell", "console"}
SKIP_DOCS = {"docs/results.md"}
NO_TEST = "# no-test"

# tiny sizes per method, as method_config overrides (keys that method's config has)
TINY_METHOD = {
    "dm": {"batch_real": 8},
    "dc": {"batch_real": 8, "outer_loop": 1, "inner_loop": 1, "batch_train": 16},
    "dsa": {"batch_real": 8, "outer_loop": 1, "inner_loop": 1, "batch_train": 16},
    "dd": {"batch_real": 64, "pool_nets": 3, "pool_held_out": 1, "pool_epochs": 1},
    "mtt": {"syn_steps": 2, "max_start_epoch": 1, "expert_epochs": 1},
    "haba": {"syn_steps": 2, "max_start_epoch": 1, "expert_epochs": 1, "extractor": "convnet_w32"},
    "datm": {"syn_steps": 2, "max_start_epoch": 1, "expert_epochs": 1, "min_start_epoch": 0, "sequential": "false",
             "init_correct": "false"},  # a 1-epoch expert classifies too few digits correctly
    "herding": {"train_epochs": 0},
    "kcenter": {"train_epochs": 0},
}
SMALL_MODEL = "convnet_w32"  # replaces the ConvNet of the methods that take one, and of the evaluation
TINY_EVAL = ["eval.epochs=1", "eval.n_models=1"]
SELECTION = ("random", "herding", "kcenter", "rded")  # no iterations


# ---------------------------------------------------------------------------------------- extraction
def doc_files() -> list[Path]:
    files = [ROOT / "README.md"] + sorted((ROOT / "docs").rglob("*.md"))
    return [f for f in files if f.is_file() and f.relative_to(ROOT).as_posix() not in SKIP_DOCS]


def blocks(text: str) -> list[tuple[str, int, str]]:
    """``(language, first line number, body)`` of each fenced block."""
    out, lang, start, body = [], None, 0, []
    for n, line in enumerate(text.splitlines(), 1):
        m = re.match(r"^\s*(```+|~~~+)\s*([\w+-]*)", line)
        if m and lang is None:
            lang, start, body = m.group(2).lower() or "text", n + 1, []
        elif m and lang is not None and not m.group(2):
            out.append((lang, start, "\n".join(body)))
            lang = None
        elif lang is not None:
            body.append(line)
    return out


def shell_commands(lang: str, start: int, body: str) -> list[tuple[int, str]]:
    """``(line number, command)``: continuations joined, console prompts stripped, comments kept."""
    cmds, buf, first = [], "", 0
    for n, raw in enumerate(body.splitlines(), start):
        line = raw.rstrip()
        if lang == "console" and not buf:
            if not line.startswith("$ "):
                continue  # output
            line = line[2:]
        if not buf:
            first = n
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        if buf.strip() and not buf.lstrip().startswith("#"):
            cmds.append((first, buf.strip()))
        buf = ""
    return cmds


def collect() -> list[tuple[str, list[tuple[str, int, str]]]]:
    """Per document: its runnable items ``(kind, line, text)``, kind ``sh`` or ``python``."""
    docs = []
    for f in doc_files():
        items = []
        for lang, start, body in blocks(f.read_text()):
            if lang in SHELL_LANGS:
                items += [("sh", n, c) for n, c in shell_commands(lang, start, body) if not c.endswith(NO_TEST)]
            elif lang in ("python", "py"):
                items.append(("python", start, body))
        docs.append((f.relative_to(ROOT).as_posix(), items))
    return docs


DOCS = collect()


# ------------------------------------------------------------------------------------------- rewriting
def split_command(cmd: str) -> list[str]:
    return shlex.split(cmd, comments=True)


def _flag(argv: list[str], name: str) -> str | None:
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def _set_flag(argv: list[str], name: str, value: str) -> list[str]:
    out, i = [], 0
    while i < len(argv):
        if argv[i] == name:
            i += 2
            continue
        if argv[i].startswith(name + "="):
            i += 1
            continue
        out.append(argv[i])
        i += 1
    return out + [name, value]


def _method_of(argv: list[str]) -> str:
    method = _flag(argv, "--method")
    if method is None and (preset := _flag(argv, "--preset")) is not None:
        from datadistill.config import load_preset

        method = load_preset(preset).get("method")
    for a in argv:  # a ``method=...`` override wins
        if a.startswith("method="):
            method = a.split("=", 1)[1]
    return method or "dm"


def tiny_datadistill(argv: list[str], experts: "Experts") -> list[str]:
    """A docs ``datadistill`` command at a tiny size on digits."""
    sub = argv[0] if argv else ""
    if sub == "data" and argv[1:2] == ["prepare"]:
        return ["data", "prepare", "digits"]
    if sub == "distill":
        original = argv
        argv = _set_flag(argv, "--dataset", "digits")
        if _flag(argv, "--source-dataset") is not None:
            argv = _set_flag(argv, "--source-dataset", "digits")
        iters = _flag(argv, "--iterations")
        for a in argv:
            if a.startswith("iterations="):
                iters = a.split("=", 1)[1]
        method = _method_of(argv)
        extra = [] if iters == "0" or method in SELECTION else ["iterations=2"]
        extra += TINY_EVAL
        tiny = dict(TINY_METHOD.get(method, {}))
        if method in ("dm", "dc", "dsa", "mtt", "haba", "datm", "herding", "kcenter"):
            tiny["model"] = SMALL_MODEL
        if method != "dd":  # DD evaluates on its own LeNets
            extra.append(f"eval.model={SMALL_MODEL}")
        if method in ("mtt", "haba", "datm"):  # the default buffer of the rewritten experts commands
            experts.ensure()
            extra.append("zca=null")
        if _flag(argv, "--out") is None:  # the default folder of the command as written
            argv += ["--out", default_out(original)]
        extra += [f"method_config.{k}={v}" for k, v in tiny.items()]
        return argv + extra + ["--no-progress"]
    if sub == "evaluate":
        if "--full" in argv:
            argv = _set_flag(argv, "--dataset", "digits")
        argv = [a for a in argv if not re.match(r"^(epochs|n_models|model)=", a)]
        return argv + ["epochs=1", "n_models=1", f"model={SMALL_MODEL}"]
    if sub == "sweep":
        argv = _set_flag(argv, "--dataset", "digits")
        tiny = {**TINY_METHOD.get(_method_of(argv), {}), "model": SMALL_MODEL}
        return argv + ["iterations=1", *TINY_EVAL, f"eval.model={SMALL_MODEL}",
                       *(f"method_config.{k}={v}" for k, v in tiny.items()), "--threads", "1"]
    if sub == "pretrain":
        argv = _set_flag(argv, "--dataset", "digits")
        return _set_flag(_set_flag(_set_flag(argv, "--nets", "2"), "--held-out", "1"), "--epochs", "1")
    if sub == "teacher":
        if _flag(argv, "--from-experts") is None:
            argv = _set_flag(_set_flag(_set_flag(argv, "--dataset", "digits"), "--epochs", "1"), "--model", SMALL_MODEL)
        return argv + ["--force", "--no-progress"]
    if sub in ("apps", "study"):
        return tiny_apps(argv)
    if sub == "experts":
        argv = _set_flag(argv, "--dataset", "digits")
        argv = _set_flag(_set_flag(argv, "--experts", "1"), "--epochs", "1")
        if _flag(argv, "--indices") is not None:
            argv = _set_flag(argv, "--indices", "0")
        argv = [a for i, a in enumerate(argv) if a != "--zca" and (i == 0 or argv[i - 1] != "--zca")]
        return _set_flag(argv, "--model", SMALL_MODEL) + ["--no-progress"]
    return argv


def tiny_apps(argv: list[str]) -> list[str]:
    """A docs ``datadistill study ...`` (or ``apps ...``) command at a tiny size on digits: a network of 1 epoch per job,
    2 class steps of 1 order, 2 ConvNets, a pool of 8 images per class halved twice, 2-iteration
    distillations."""
    app = argv[1] if len(argv) > 1 else ""
    argv = _set_flag(argv, "--dataset", "digits")
    argv = [a for a in argv if not re.match(r"^(epochs|n_models|model)=", a)]
    if app == "continual":
        argv = _set_flag(_set_flag(argv, "--orders", "0"), "--steps", "2")
    elif app == "nas":
        for flag, value in (("--width", "8"), ("--depth", "1,2"), ("--norm", "instancenorm"), ("--act", "relu"),
                            ("--pool", "avgpooling"), ("--full-epochs", "1")):
            argv = _set_flag(argv, flag, value)
    elif app == "ipc-curve":
        argv = _set_flag(argv, "--ipcs", "1,2")
    elif app == "privacy":
        out, i = [], 0
        while i < len(argv):
            if argv[i] == "--distill" and i + 1 < len(argv):
                name, _, rest = argv[i + 1].partition(":")
                items = shlex.split(rest)
                method = _method_of([a.replace("preset=", "--preset=", 1) if a.startswith("preset=") else a
                                     for a in items])
                tiny = {**TINY_METHOD.get(method, {}), "model": SMALL_MODEL}
                extra = ([] if method in SELECTION else ["iterations=2"]) + [f"method_config.{k}={v}"
                                                                            for k, v in tiny.items()]
                out += ["--distill", f"{name}:{rest} {' '.join(extra)}"]
                i += 2
                continue
            out.append(argv[i])
            i += 1
        argv = out
        for flag, value in (("--pool", "8"), ("--splits", "2"), ("--per-class", "2"), ("--experts", "1")):
            argv = _set_flag(argv, flag, value)
    return argv + ["epochs=1", "n_models=1", f"model={SMALL_MODEL}", "--no-progress"]


def default_out(argv: list[str]) -> str:
    """``runs/METHOD-DATASET-ipcN-sSEED`` of a distill command before its rewrite."""
    preset: dict = {}
    if (name := _flag(argv, "--preset")) is not None:
        from datadistill.config import load_preset

        preset = load_preset(name)
    dataset = _flag(argv, "--dataset") or preset.get("dataset", "mnist")
    ipc = _flag(argv, "--ipc") or preset.get("ipc", 10)
    return f"runs/{_method_of(argv)}-{dataset}-ipc{ipc}-s{_flag(argv, '--seed') or preset.get('seed', 0)}"


class Experts:
    """The default expert buffer of the rewritten ``experts`` commands: MTT and HaBa find it there
    (one 1-epoch expert of the small ConvNet on digits, trained on first use)."""

    def __init__(self) -> None:
        self.ready = False

    def ensure(self) -> None:
        if not self.ready:
            rc, err = run_datadistill(tiny_datadistill(["experts", "--dataset", "digits"], self))
            assert rc == 0, err
            self.ready = True


# --------------------------------------------------------------------------------------------- running
def run_datadistill(argv: list[str]) -> tuple[int, str]:
    from datadistill.cli import main

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            rc = main(argv)
    except SystemExit as e:  # argparse errors
        rc = e.code if isinstance(e.code, int) else 1
    except Exception as e:  # noqa: BLE001  a traceback is a failure to report, not to crash on
        return 1, f"{type(e).__name__}: {e}"
    return rc or 0, err.getvalue()[-500:]


def run_make(argv: list[str]) -> tuple[int, str]:
    targets = [a for a in argv[1:] if not a.startswith("-") and "=" not in a] or ["help"]
    p = subprocess.run(["make", "-n", *targets], cwd=ROOT, capture_output=True, text=True, timeout=60)
    return p.returncode, p.stderr[-500:]


def run_python_script(argv: list[str], cwd: Path) -> tuple[int, str]:
    script = ROOT / argv[1]
    if not script.is_file():
        return 1, f"no such script: {argv[1]}"
    try:
        py_compile.compile(str(script), doraise=True)
    except py_compile.PyCompileError as e:
        return 1, str(e)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    if script.parent.name == "examples":
        cmd = [sys.executable, str(script)]
    elif "argparse" in script.read_text():
        cmd = [sys.executable, str(script), "--help"]
    else:
        return 0, ""  # compiled; running it would do the real work
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    return p.returncode, p.stderr[-500:]


def run_shell(cmd: str, cwd: Path, experts: Experts) -> tuple[int, str]:
    argv = split_command(cmd)
    while argv and re.match(r"^[A-Z_][A-Z0-9_]*=", argv[0]):  # VAR=value prefixes
        argv = argv[1:]
    if not argv:
        return 0, ""
    prog = argv[0]
    if prog in ("datadistill", ".venv/bin/datadistill"):
        return run_datadistill(tiny_datadistill(argv[1:], experts))
    if prog == "make":
        return run_make(argv)
    if prog in ("python", "python3") and len(argv) > 1 and argv[1].endswith(".py"):
        return run_python_script(argv, cwd)
    if prog in ("source", "pip", "cd", "export", "git"):
        return 0, ""  # environment set-up, not ours to run
    return 1, f"don't know how to check {prog!r}: fence the block as text or mark the command '{NO_TEST}'"


def _isolate_registries(monkeypatch) -> None:
    """What a page registers (docs/development.md adds a method) is gone after its test, so that the
    other tests see only the package's own names."""
    from datadistill.registry import Registry

    mods = [m for n, m in list(sys.modules.items()) if n == "datadistill" or n.startswith("datadistill.")]
    regs = {id(o): o for m in mods for o in vars(m).values() if isinstance(o, Registry)}
    for reg in regs.values():
        for attr in ("_entries", "_names", "_aliases"):
            monkeypatch.setattr(reg, attr, {k: (list(v) if isinstance(v, list) else v)
                                            for k, v in getattr(reg, attr).items()})


def _tiny_api(monkeypatch) -> None:
    import datadistill
    import datadistill.engine  # noqa: F401  the modules that bind get_protocol when imported are imported
    import datadistill.grids  # noqa: F401  before it is patched, so that the tiny one does not outlive the test
    import datadistill.report  # noqa: F401
    import datadistill.resolve  # noqa: F401
    from datadistill import evaluation
    from datadistill.studies import discover

    discover()

    real_distill, real_protocol = datadistill.distill, evaluation.get_protocol

    def distill(out, **config):
        if config.get("iterations", 1) != 0:
            config["iterations"] = min(int(config.get("iterations", 2)), 2)
        config["eval"] = {**(config.get("eval") or {}), "epochs": 1, "n_models": 1}
        method = config.get("method", "dm")
        mc = dict(config.get("method_config") or {})
        if method in ("dm", "dc", "dsa", "dd"):
            mc.update({k: v for k, v in TINY_METHOD[method].items() if k == "batch_real"})
        config["method_config"] = mc
        return real_distill(out, **config)

    def get_protocol(name, **overrides):
        return real_protocol(name, **{**overrides, "epochs": 1, "n_models": 1})

    monkeypatch.setattr(datadistill, "distill", distill)
    monkeypatch.setattr(datadistill, "get_protocol", get_protocol)
    monkeypatch.setattr(evaluation, "get_protocol", get_protocol)


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def test_docs_have_commands():
    assert any(items for _, items in DOCS), "no commands found in README.md and docs/"


@pytest.mark.parametrize("doc,items", DOCS, ids=[d for d, _ in DOCS])
def test_doc_commands_run(doc, items, tmp_path, shared_cache, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(shared_cache))  # pools and expert buffers, shared by the pages
    _isolate_registries(monkeypatch)
    _tiny_api(monkeypatch)
    experts = Experts()
    module = types.ModuleType("datadistill_docs_example")  # dataclasses look their module up
    monkeypatch.setitem(sys.modules, module.__name__, module)
    namespace = module.__dict__
    failures = []
    for kind, line, text in items:
        where = f"{doc}:{line}"
        if kind == "python":
            try:
                code = compile(text, where, "exec")
                if NO_TEST not in text:
                    exec(code, namespace)  # noqa: S102  the docs' own examples
                rc, err = 0, ""
            except Exception as e:  # noqa: BLE001
                rc, err = 1, f"{type(e).__name__}: {e}"
        else:
            rc, err = run_shell(text, tmp_path, experts)
        capsys.readouterr()
        if rc != 0:
            failures.append(f"{where}: exit {rc}: {text}\n    {err.strip()}")
    assert not failures, "commands in the docs fail:\n" + "\n".join(failures)


def test_extraction():
    text = "x\n```bash\nmake test   # tests\ndatadistill distill --dataset mnist \\\n    --ipc 1\n" \
           "datadistill list models  # no-test\n```\n```text\nnot a command\n```\n```console\n$ make help\noutput\n```\n"
    got = [(lang, shell_commands(lang, s, b)) for lang, s, b in blocks(text) if lang in SHELL_LANGS]
    assert got == [("bash", [(3, "make test   # tests"), (4, "datadistill distill --dataset mnist      --ipc 1"),
                             (6, "datadistill list models  # no-test")]),
                   ("console", [(12, "make help")])]
    assert tiny_datadistill(["distill", "--dataset", "mnist", "--method", "dm", "--iterations", "300"], Experts())[:6] \
        == ["distill", "--method", "dm", "--iterations", "300", "--dataset"]


# ---------------------------------------------------------------------------------------------- links
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def heading_anchors(path: Path) -> set[str]:
    """GitHub's anchors of a page: its headings' slugs (``-1``, ``-2`` for repeats) and ``<a id>``s."""
    text = path.read_text()
    out, seen, fenced = set(), {}, False
    for line in text.splitlines():
        if re.match(r"^\s*(```|~~~)", line):
            fenced = not fenced
            continue
        m = None if fenced else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", re.sub(r"<[^>]+>", "", m.group(1)).strip().lower()).replace(" ", "-")
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            out.add(slug if n == 0 else f"{slug}-{n}")
    return out | set(re.findall(r'<a\s+(?:id|name)="([^"]+)"', text))


def broken_links(doc: Path) -> list[str]:
    """Relative links of a page whose file, heading anchor or ``#Ln`` line does not exist."""
    text = re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", doc.read_text(), flags=re.S))
    bad = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue  # http:, mailto:
        path, _, frag = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        if not dest.exists():
            bad.append(f"{target} (no such file)")
        elif frag and dest.suffix == ".md" and frag not in heading_anchors(dest):
            bad.append(f"{target} (no such anchor)")
        elif frag and re.fullmatch(r"L\d+", frag) and int(frag[1:]) > len(dest.read_text().splitlines()):
            bad.append(f"{target} (past the file's end)")
    return bad


@pytest.mark.parametrize("doc", ["README.md", *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").rglob("*.md"))])
def test_doc_links_resolve(doc):
    assert not broken_links(ROOT / doc), f"{doc}: broken links: {broken_links(ROOT / doc)}"
