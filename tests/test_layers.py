"""The import layers of ARCHITECTURE.md: a module never imports one of a higher layer, and no module
outside ``methods/dd/`` imports Dataset Distillation, and no modules import each other round (a cycle).

Every module of ``src/datadistill`` is parsed (not imported) and every import counts: top-level
ones, lazy ones inside functions and relative ones within a package. Only imports under
``if TYPE_CHECKING:`` are exempt: they never run, so they create no dependency at run time.

The layers, lowest first (the one place they are written down for the code; a new module must be
placed here, or the test fails and says so):

    0  registry, config, seeding, version, fileio (atomic writes), device (pick_device, names),
       paths (output checks), cache (keyed cache folders)
    1  data/ (specs, loaders, mirrors, ZCA), models/, augment/, functional/ (pure math)
    2  synset/ (sets and their file format), train/ (the one training loop)
    3  evaluation/ (protocols, evaluator, scores), experts/ (MTT's trajectories), teachers (networks
       that label sets: evaluation relabels with them, methods start from them), viz (pictures of
       sets and runs: it draws what synset/ and data/ hold, and is used by the engine and the CLI)
    4  methods/ (each method owns its special cases; dd/ is a package)
    5  engine (the loop and run checkpoints), resolve (preset + overrides -> a resolved run),
       rundir (the run folder: preparing, locking, discarding), report (report.md of a run),
       executor (serial / process / Ray backends), grids (experts and evaluations as executor tasks),
       studies/ (every job that is not a distillation: continual, privacy, nas, ipc-curve, sweep)
    6  cli, __main__, the package's __init__ (public API)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import datadistill

ROOT = Path(datadistill.__file__).parent

# module or package prefix -> layer; the longest prefix that matches a module decides
LAYERS: dict[str, int] = {
    "errors": 0, "registry": 0, "config": 0, "seeding": 0, "version": 0, "fileio": 0, "device": 0, "paths": 0,
    "cache": 0,
    "data": 1, "models": 1, "augment": 1, "functional": 1, "kernels": 1,
    "synset": 2, "train": 2,
    "evaluation": 3, "experts": 3, "teachers": 3, "viz": 3,
    "methods": 4,
    "engine": 5, "resolve": 5, "rundir": 5, "report": 5, "executor": 5, "grids": 5, "studies": 5,
    "cli": 6, "__main__": 6, "": 6,  # "": the package itself (datadistill/__init__.py)
}
DD = "methods.dd"
REGISTRATION = "methods"  # methods/__init__.py imports every method's module (`from . import dd`) to register it


def modules() -> dict[str, Path]:
    """Every module as its dotted name below ``datadistill`` ("" for the package's __init__)."""
    out = {}
    for p in sorted(ROOT.rglob("*.py")):
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = p
    return out


def layer(name: str) -> int:
    best = max((k for k in LAYERS if k == "" or name == k or name.startswith(k + ".")), key=len)
    if best == "" and name != "":
        raise AssertionError(f"module datadistill.{name} has no layer; add it to LAYERS in {__file__}")
    return LAYERS[best]


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports(name: str, path: Path, known: set[str]) -> list[tuple[str, int]]:
    """``(imported module below datadistill, line)`` for every import in the module, lazy ones too;
    ``from pkg import name`` counts as an import of ``pkg.name`` where that is a module."""
    tree = ast.parse(path.read_text(), str(path))
    skip = _type_checking_lines(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                mod = ".".join([*base, *([node.module] if node.module else [])])
                mod = "datadistill" + ("." + mod if mod else "")
            else:
                mod = node.module or ""
            # ``from pkg import submodule`` imports the submodule
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}"[len("datadistill."):] in known else mod
                       for a in node.names]
        else:
            continue
        for t in targets:
            if t == "datadistill" or t.startswith("datadistill."):
                found.append((t[len("datadistill."):] if t != "datadistill" else "", node.lineno))
    return sorted(found, key=lambda t: t[1])


MODULES = modules()


def import_graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules it imports (lazy ones too; ``from mod import name`` counts as ``mod``)."""
    graph: dict[str, set[str]] = {n: set() for n in mods}
    for name, path in mods.items():
        for target, _ in imports(name, path, set(mods)):
            while target not in mods and "." in target:  # a name inside a module: the module
                target = target.rpartition(".")[0]
            if target in mods and target != name:
                graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles: each strongly connected group of two or more modules, one path around it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def test_every_module_has_a_layer():
    for name in MODULES:
        layer(name)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_upward_import(name):
    here = layer(name)
    up = [f"line {line}: imports datadistill.{target or '(the package)'} (layer {layer(target)})"
          for target, line in imports(name, MODULES[name], set(MODULES)) if layer(target) > here]
    assert not up, f"datadistill.{name or '(package)'} (layer {here}) " + "; ".join(up)


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n != DD and not n.startswith(DD + ".")))
def test_only_dd_imports_dd(name):
    dd = [line for target, line in imports(name, MODULES[name], set(MODULES))
          if target == DD or target.startswith(DD + ".")]
    if name == REGISTRATION:  # registering: the bare package import, no name taken from it
        text = MODULES[name].read_text()
        assert "from .dd import" not in text and "from .dd." not in text
        dd = []
    assert not dd, f"datadistill.{name} imports DD (lines {dd}): reach it through the registry and its hooks"


def test_no_import_cycle():
    """No group of modules imports itself round, lazily or not: a lazy import that breaks a cycle at
    load time still ties the layers into one knot."""
    found = cycles(import_graph(MODULES))
    assert not found, "import cycles under src/datadistill: " + "; ".join(" <-> ".join(g) for g in found)


def test_the_cycle_checker_finds_a_lazy_cycle(tmp_path):
    (tmp_path / "a.py").write_text("from .b import f\n")
    (tmp_path / "b.py").write_text("def f():\n    from .c import g\n")
    (tmp_path / "c.py").write_text("from . import a\n")
    (tmp_path / "d.py").write_text("from .a import x\n")
    mods = {n: tmp_path / f"{n}.py" for n in "abcd"}
    assert cycles(import_graph(mods)) == [["a", "b", "c"]]


def test_the_checker_sees_lazy_relative_and_from_package_imports(tmp_path):
    src = ("from ..engine import run\n"
           "def f():\n    from . import dd\n    import datadistill.cli\n"
           "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..cli import main\n")
    p = tmp_path / "x.py"
    p.write_text(src)
    found = imports("methods.x", p, {"methods.dd", "engine", "cli"})
    assert found == [("engine", 1), ("methods.dd", 3), ("cli", 4)]
    assert layer("methods.dd.pools") == 4 and layer("") == 6 and layer("data.mirrors") == 1
    with pytest.raises(AssertionError, match="has no layer"):
        layer("somewhere_new")


def test_module_sizes():
    """Issue 30's bound on a module: none under src/ over 400 lines, none of cli/ over 300."""
    long = {name or "(package)": n for name, path in MODULES.items()
            if (n := len(path.read_text().splitlines())) > (300 if name.startswith("cli") else 400)}
    assert not long, f"modules over their line bound (400; cli 300): {long}"
