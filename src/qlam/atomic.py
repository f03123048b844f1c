"""Atomic file writes, torch-free: every writer in qlam (checkpoints, data caches, results,
the kernel's build marker) goes through :func:`atomic_write`.

The bytes go to a temp file beside the target, named ``.NAME.PID.XXXX.tmp`` (so a cleaner can
tell a dead writer's leftovers from a live one's, :func:`writer_pid`), are flushed and
fsynced, get the permissions a plain ``open`` would give, and replace the target in one
rename: a reader sees the old file or the new one, never half of one. The directory is
fsynced after the rename, so that the new name survives a crash of the machine too.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TMP_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path, write: Callable[[BinaryIO], object]) -> Path:
    """Write ``path`` through ``write(binary file)`` atomically (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.",
                               suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _sync_dir(path.parent)
    return path


def _sync_dir(folder: Path) -> None:
    """fsync a directory, so that a rename in it survives a power loss (POSIX only)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def writer_pid(tmp_name: str) -> int | None:
    """The process id in a temp file name written by :func:`atomic_write`, else None."""
    if not (tmp_name.startswith(".") and tmp_name.endswith(TMP_SUFFIX)):
        return None
    parts = tmp_name.split(".")[-3:-1]
    return next((int(x) for x in parts if x.isdigit()), None)


__all__ = ["TMP_SUFFIX", "atomic_write", "atomic_write_bytes", "atomic_write_text", "writer_pid"]
