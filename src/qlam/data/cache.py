"""The dataset cache: one ``$QLAM_DATA/<name>.npz`` per dataset (default ``~/.cache/qlam``),
written atomically (:mod:`qlam.atomic`) only after its arrays verify against the sums in
:mod:`qlam.data.facts`, and re-verified on read (memoised per file while it is unchanged)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from qlam.atomic import atomic_write, writer_pid
from qlam.data.facts import (
    DATASETS,
    ENV_ROOT,
    FETCH_DIR_TAG,
    IDX_DATASETS,
    KEYS,
    N_CLASSES,
    SHAPES,
    SUMS,
    DataError,
)


def cache_dir(root: str | os.PathLike | None = None) -> Path:
    """The cache directory: ``root``, else ``$QLAM_DATA``, else ``~/.cache/qlam``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(ENV_ROOT)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "qlam"


def cache_path(name: str, root: str | os.PathLike | None = None) -> Path:
    return cache_dir(root) / f"{check_name(name)}.npz"


def check_name(name: str) -> str:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return name


def _idx_header(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)


def digest(name: str, key: str, arr: np.ndarray) -> str:
    """SHA-256 of one decoded array, in the form :data:`SUMS` uses."""
    h = hashlib.sha256()
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    if name in IDX_DATASETS:
        h.update(_idx_header(arr))
    h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(directory: Path) -> list[Path]:
    """Remove temp files / work directories left in ``directory`` by fetches that were
    killed (their process id, part of the name, no longer exists). Returns what went."""
    removed = []
    if not directory.is_dir():
        return removed
    for p in directory.iterdir():
        if not p.name.startswith("."):
            continue
        if FETCH_DIR_TAG in p.name:
            head = p.name.split(FETCH_DIR_TAG, 1)[1].split("-", 1)[0]
            pid = int(head) if head.isdigit() else None
        else:
            pid = writer_pid(p.name)
        if pid is None or _pid_alive(pid):
            continue
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def save_cache(name: str, arrays: dict[str, np.ndarray], meta: dict, root=None) -> Path:
    """Verify ``arrays`` and write them atomically to the cache; returns the cache path."""
    verify(name, arrays)
    path = cache_path(name, root)
    payload = {k: np.ascontiguousarray(arrays[k], dtype=np.uint8) for k in KEYS}
    payload["meta"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), np.uint8)
    atomic_write(path, lambda f: np.savez(f, **payload))
    _VERIFIED.pop(str(path), None)
    return path



def check_arrays(name: str, arrays: dict[str, np.ndarray]) -> None:
    """Shapes, dtypes, label range and image/label counts; raises DataError."""
    for split in ("train", "test"):
        xi, yi = arrays.get(f"{split}_images"), arrays.get(f"{split}_labels")
        if xi is None or yi is None:
            raise DataError(f"{name}: {split} images or labels missing")
        if xi.shape[0] != yi.shape[0]:
            raise DataError(f"{name}: {split} has {xi.shape[0]} images but {yi.shape[0]} labels")
    for key in KEYS:
        arr = arrays[key]
        want = SHAPES[name][key]
        if arr.dtype != np.uint8:
            raise DataError(f"{name}: {key} has dtype {arr.dtype}, expected uint8")
        if tuple(arr.shape) != want:
            raise DataError(f"{name}: {key} has shape {tuple(arr.shape)}, expected {want}")
        if key.endswith("labels") and arr.size and int(arr.max()) >= N_CLASSES:
            raise DataError(f"{name}: {key} has a label {int(arr.max())} >= {N_CLASSES}")


def verify(name: str, arrays: dict[str, np.ndarray], keys: Iterable[str] = KEYS) -> None:
    """Check structure, then the SHA-256 of each array against :data:`SUMS`."""
    check_arrays(name, arrays)
    bad = []
    for key in keys:
        got = digest(name, key, arrays[key])
        want = SUMS[name][key]
        if got != want:
            bad.append(f"{key}: expected sha256 {want}, got {got}")
    if bad:
        raise DataError(f"{name}: checksum mismatch: " + "; ".join(bad))


# in-process memo of cache files already verified whole: path -> (size, mtime_ns)
_VERIFIED: dict[str, tuple[int, int]] = {}


def read_cache(name: str, root=None, keys: Iterable[str] = KEYS, check: bool = True):
    """Read arrays from the cache file. With ``check``, the whole entry (every split, not
    only the requested ``keys``) is verified when the file is first opened in this process
    (and again whenever it changes). Raises FileNotFoundError if there is no cache and
    DataError if it is unreadable or any array fails verification."""
    path = cache_path(name, root)
    keys = tuple(keys)
    st = path.stat()  # FileNotFoundError if missing
    stamp = (st.st_size, st.st_mtime_ns)
    verify_all = check and _VERIFIED.get(str(path)) != stamp
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in (KEYS if verify_all else keys)}
            meta = json.loads(bytes(z["meta"]).decode()) if "meta" in z.files else {}
    except Exception as exc:  # corrupted zip, truncated member, missing key, ...
        raise DataError(f"cache {path} is unreadable ({type(exc).__name__}: {exc})") from exc
    if verify_all:
        for key in KEYS:
            arr = arrays[key]
            want = SHAPES[name][key]
            if arr.dtype != np.uint8 or tuple(arr.shape) != want:
                raise DataError(
                    f"cache {path}: {key} is {arr.dtype}{tuple(arr.shape)}, "
                    f"expected uint8{want}"
                )
            got = digest(name, key, arr)
            if got != SUMS[name][key]:
                raise DataError(
                    f"cache {path}: {key} fails its checksum (sha256 {got}, expected "
                    f"{SUMS[name][key]})"
                )
        _VERIFIED[str(path)] = stamp
    return {k: arrays[k] for k in keys}, meta
