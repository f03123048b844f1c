"""Run files: atomic torch saves and JSON-lines appends (through :mod:`qlam.atomic`), and
loads that name the problem when a file is missing or corrupt."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from qlam.atomic import atomic_write, atomic_write_text


def atomic_save(obj, path) -> None:
    """torch.save to ``path`` atomically."""
    atomic_write(path, lambda f: torch.save(obj, f))


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
