"""Every checkout's `.venv` runs that checkout's code (issue 15): clones share the cached dependencies
(`make venv`'s cache venv), not the editable install. Clones HEAD, so uncommitted changes are not tested."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# variables a make running these tests passes down, which must not reach the clones' make
_DROP = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}
ENV = {k: v for k, v in os.environ.items() if k not in _DROP}


def _cache_venv() -> Path:
    """The cache venv `make test` exports; skip without it (fail under CI, where `make test` runs this)."""
    cache = os.environ.get("DATADISTILL_VENV_CACHE")
    why = None
    if not cache or not (Path(cache) / ".complete").exists():
        why = "no DATADISTILL_VENV_CACHE naming a complete cache venv (run the tests with `make test`)"
    elif not (shutil.which("git") and shutil.which("make")):
        why = "needs git and make"
    elif subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True).returncode:
        why = f"{ROOT} is not a git checkout"
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    return Path(cache)


def _run(cmd: list[str], cwd: Path) -> str:
    r = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True)
    assert r.returncode == 0, f"{cmd} in {cwd} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return r.stdout.strip()


def _make_venv(clone: Path, cache: Path) -> None:
    # the cache named outright: a clone of HEAD may hash a different pyproject.toml than this checkout's
    _run(["make", "venv", f"VENV_DIR={cache}"], clone)


def _assert_runs_own_code(clone: Path, elsewhere: Path) -> None:
    venv = clone / ".venv"
    assert venv.is_dir() and not venv.is_symlink()
    pkg = clone / "src" / "datadistill"
    version = _run([str(venv / "bin" / "datadistill"), "--version"], elsewhere)
    assert version.startswith("datadistill ") and version.endswith(f" from {pkg}"), version
    code = "import datadistill; print(datadistill.__file__)"
    assert _run([str(venv / "bin" / "python"), "-c", code], elsewhere) == str(pkg / "__init__.py")


@pytest.mark.slow
def test_each_clone_runs_its_own_code(tmp_path):
    cache = _cache_venv()
    a, b = tmp_path / "a", tmp_path / "b"
    for clone in (a, b):
        _run(["git", "clone", "-q", str(ROOT), str(clone)], tmp_path)
    # b as a checkout of an older Makefile left it: `.venv` a link (to the cache there; to a decoy here)
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    (decoy / "keep").write_text("")
    if (b / ".venv").is_symlink() or (b / ".venv").exists():
        (b / ".venv").unlink()
    (b / ".venv").symlink_to(decoy)

    for clone in (a, b):
        _make_venv(clone, cache)
    assert (decoy / "keep").exists(), "replacing the .venv link touched what it pointed to"
    for clone in (a, b):
        _assert_runs_own_code(clone, tmp_path)
    # the cache holds the dependencies only, not some clone's datadistill
    spec = "import importlib.util as u; print(u.find_spec('datadistill'))"
    assert _run([str(cache / "bin" / "python"), "-c", spec], tmp_path) == "None"

    made = (b / ".venv" / "pyvenv.cfg").stat().st_mtime_ns
    _make_venv(b, cache)
    assert (b / ".venv" / "pyvenv.cfg").stat().st_mtime_ns == made, "an up-to-date .venv was rebuilt"

    shutil.rmtree(a)
    _assert_runs_own_code(b, tmp_path)
