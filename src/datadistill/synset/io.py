"""The distilled-set file: one ``.safetensors`` file, tensors plus JSON metadata, never a pickle.

Metadata (under the safetensors header key ``datadistill``): format version, set type and its
config, the dataset spec with its normalization, method name and config, images per class,
storage size, evaluation results, seed, library and torch versions. A set distilled on ZCA-whitened
data also stores its transform: tensors ``zca.mean`` and ``zca.matrix`` beside the set's, metadata
``"zca": {"regularization": r}`` (and the same entry in the spec's ``extra``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..data.spec import DatasetSpec
from ..data.zca import KEY as ZCA_KEY, ZCA, ZCAError
from ..errors import UserError
from ..fileio import atomic_write, safetensors_header
from ..version import versions
from .base import SYNSETS, SyntheticSet

# Version 2 adds an optional ZCA transform (tensors ``zca.mean``, ``zca.matrix``; metadata ``zca``).
# Version 3 adds a set's optional label vectors (tensor ``soft_labels``; ``label_loss`` and
# ``label_temperature`` in the set's config). A file is written with the lowest version that holds
# it, so older readers keep reading plain sets, while a whitened or soft-labelled set, which an older
# reader would silently evaluate wrongly (unwhitened data, hard labels), is refused by them.
FORMAT_VERSION = 3
ZCA_PREFIX = "zca."
META_KEY = "datadistill"


class SynsetFileError(UserError, ValueError):
    """The file is not a readable datadistill distilled-set file."""


@dataclass
class SynsetFile:
    """A loaded distilled set: the set itself, its dataset spec and the rest of the metadata."""

    synset: Any
    spec: DatasetSpec
    meta: dict[str, Any] = field(default_factory=dict)
    zca: ZCA | None = None  # the whitening the set was distilled under (apply it to real data), or None

    @property
    def method(self) -> str:
        return str(self.meta.get("method", "unknown"))


def save_synset(path: str | os.PathLike[str], synset: SyntheticSet, spec: DatasetSpec, *, zca: ZCA | None = None,
                **meta: Any) -> Path:
    """Write ``synset`` (any registered set type) with ``spec`` and extra metadata to ``path``.

    Useful keys for ``meta``: ``method``, ``method_config``, ``seed``, ``evaluation``, ``iterations``.
    ``zca``: the transform of a set distilled on ZCA-whitened data (``data.zca``), stored with it so
    that evaluation whitens the real data the same way.
    """
    path = Path(path)
    kind = _kind_of(synset)
    if zca is None and spec.ref.zca is not None:
        raise ValueError(f"the spec says the data is ZCA-whitened (regularization {spec.ref.zca}); pass its "
                         "transform (zca=data.zca) so that evaluation can whiten the real data the same way")
    if zca is not None:
        spec = spec.with_ref(spec.ref.with_(zca=float(zca.regularization)))
    header = {
        "format_version": _version_for(synset, zca),
        "type": kind,
        "synset_config": synset.config(),
        "dataset": spec.to_dict(),
        "ipc": synset.ipc,
        "num_images": int(synset.materialize()[0].shape[0]),
        "storage_numel": synset.storage_numel(),
        "learned_lr": synset.learned_lr(),
        "versions": versions(),
        **({ZCA_KEY: {"regularization": zca.regularization}} if zca is not None else {}),
        **meta,
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in synset.tensors().items()}
    if zca is not None:
        tensors.update({ZCA_PREFIX + k: v for k, v in zca.tensors().items()})
    text = json.dumps(header, default=_json_default)
    atomic_write(path, lambda p: save_file(tensors, str(p), metadata={META_KEY: text}))
    return path


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON metadata of a distilled-set file (reads only the header)."""
    path = Path(path)
    if path.is_dir():
        raise SynsetFileError(f"{path} is a folder, not a distilled-set file (.safetensors)")
    if not path.is_file():
        raise SynsetFileError(f"no such file: {path}")
    try:
        raw = safetensors_header(path, META_KEY)
    except (OSError, ValueError) as e:
        raise SynsetFileError(f"{path} is not a safetensors file ({e})") from e
    if raw is None:
        raise SynsetFileError(f"{path} is a safetensors file but has no datadistill metadata")
    try:
        meta = json.loads(raw)
    except ValueError as e:
        raise SynsetFileError(f"{path}: its datadistill metadata is not valid JSON ({e}); the file is "
                              "damaged") from None
    if not isinstance(meta, dict):
        raise SynsetFileError(f"{path}: its datadistill metadata is not a JSON object; the file is damaged")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise SynsetFileError(
            f"{path} has format version {version!r}; this datadistill reads versions <= {FORMAT_VERSION} "
            "(upgrade datadistill)"
        )
    return meta


def load_synset(path: str | os.PathLike[str], device: torch.device | str = "cpu") -> SynsetFile:
    """Load a distilled-set file written by `save_synset` (no unpickling)."""
    meta = read_meta(path)
    kind = meta.get("type")
    if kind not in SYNSETS:
        raise SynsetFileError(f"{path}: unknown set type {kind!r}; known: {', '.join(SYNSETS.names())}")
    try:
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError) as e:  # e.g. a file cut short after its header
        raise SynsetFileError(f"{path}: its tensors cannot be read ({e}); the file is damaged") from e
    stored = {k[len(ZCA_PREFIX):]: tensors.pop(k) for k in list(tensors) if k.startswith(ZCA_PREFIX)}
    try:
        spec = DatasetSpec.from_dict(meta["dataset"])
    except (KeyError, TypeError, ValueError) as e:
        raise SynsetFileError(f"{path}: its dataset metadata is damaged ({type(e).__name__}: {e})") from e
    zca = _load_zca(path, meta, stored, spec.ref.zca is not None)
    try:
        synset = SYNSETS.get(kind).from_tensors(tensors, meta["synset_config"])
    except (KeyError, TypeError, ValueError) as e:  # metadata and tensors that do not fit a set
        raise SynsetFileError(f"{path}: not a complete {kind} set ({type(e).__name__}: {e}); the file is "
                              "damaged") from e
    return SynsetFile(synset=synset.to(device), spec=spec, meta=meta, zca=zca)


def _load_zca(path: Any, meta: dict[str, Any], tensors: dict[str, torch.Tensor], spec_whitened: bool) -> ZCA | None:
    """The stored ZCA transform (``spec_whitened``: the file's spec says its data were whitened); a file
    whose metadata and tensors disagree is refused."""
    info = meta.get(ZCA_KEY)
    whitened = info is not None or spec_whitened
    if not whitened and not tensors:
        return None
    if not whitened or not tensors or not isinstance(info, dict) or "regularization" not in info:
        raise SynsetFileError(f"{path}: its ZCA whitening is incomplete (metadata {info!r}, tensors "
                              f"{sorted(ZCA_PREFIX + k for k in tensors) or 'none'}); the file is damaged")
    try:
        return ZCA.from_tensors(tensors, float(info["regularization"]))
    except (ZCAError, TypeError, ValueError) as e:
        raise SynsetFileError(f"{path}: {e}") from e


def update_meta(path: str | os.PathLike[str], **changes: Any) -> dict[str, Any]:
    """Rewrite a file's metadata (e.g. to record an evaluation), tensors unchanged, atomically."""
    path = Path(path)
    meta = read_meta(path)
    meta.update(changes)
    tensors = load_file(str(path))
    text = json.dumps(meta, default=_json_default)
    atomic_write(path, lambda p: save_file(tensors, str(p), metadata={META_KEY: text}))
    return meta


def _version_for(synset: Any, zca: ZCA | None) -> int:
    if synset.label_vectors() is not None:
        return 3
    return 2 if zca is not None else 1


def _kind_of(synset: Any) -> str:
    for name in SYNSETS.names():
        if type(synset) is SYNSETS.get(name):
            return name
    raise TypeError(f"{type(synset).__name__} is not a registered synthetic set type ({', '.join(SYNSETS.names())})")


def _json_default(o: Any) -> Any:
    if isinstance(o, (Path,)):
        return str(o)
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if isinstance(o, (set, tuple)):
        return list(o)
    raise TypeError(f"cannot store {type(o).__name__} in metadata")
