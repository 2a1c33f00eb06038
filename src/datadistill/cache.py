"""Where trained artefacts shared between runs are cached (pretrained pools, expert trajectories).

One folder per configuration: ``$XDG_CACHE_HOME/datadistill/KIND/PREFIX-HASH`` (default
``~/.cache/datadistill``), the hash taken over the JSON of everything that changes the content, so
that every run asking for the same thing finds the same folder and anything else gets its own.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def cache_dir(kind: str) -> Path:
    """``$XDG_CACHE_HOME/datadistill/KIND`` (``~/.cache/datadistill/KIND`` when unset)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "datadistill" / kind


def config_hash(key: Any, length: int = 10) -> str:
    """The first ``length`` hex digits of the SHA-256 of ``key`` as sorted-key JSON."""
    text = json.dumps(key, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def keyed_dir(kind: str, prefix: str, key: Any) -> Path:
    """``cache_dir(kind) / f"{prefix}-{config_hash(key)}"``."""
    return cache_dir(kind) / f"{prefix}-{config_hash(key)}"
