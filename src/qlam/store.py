"""Files that must never be half-written: atomic saves (temp file + rename) and loads
that name the problem when a file is missing or corrupt."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch


def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save(obj, path) -> None:
    """torch.save to ``path`` atomically."""
    _atomic(path, lambda f: torch.save(obj, f))


def atomic_write_text(path, text: str) -> None:
    _atomic(path, lambda f: f.write(text.encode()))


def append_jsonl(path, record: dict) -> None:
    """Append one JSON line (rewritten atomically, so a kill leaves the old file intact)."""
    path = Path(path)
    old = path.read_text() if path.exists() else ""
    atomic_write_text(path, old + json.dumps(record) + "\n")


def read_jsonl(path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    out = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{i}: corrupt JSON line ({exc})") from exc
    return out


def load_checkpoint(path, device="cpu") -> dict:
    """torch.load with clear errors for a missing, corrupt or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ck = torch.load(path, map_location=device, weights_only=False)
    except Exception as exc:  # torch raises many kinds for a damaged file
        raise ValueError(f"{path} is corrupt or not a torch checkpoint: {exc}") from exc
    if not isinstance(ck, dict):
        raise ValueError(f"{path} is not a qlam checkpoint (got {type(ck).__name__})")
    return ck
