"""Run files: atomic torch saves and JSON-lines appends (through :mod:`qlam.atomic`), and
loads that name the problem when a file is missing, corrupt or tampered with.

Checkpoints are plain dicts of tensors, numbers, strings, lists and dicts. They are read with
``torch.load(weights_only=True)``: unpickling may only rebuild tensors and containers, so a
crafted file cannot run code. :func:`atomic_save` stores a SHA-256 of the whole content
(key ``sha256``, see :func:`content_digest`) that :func:`load_checkpoint` verifies; a file
written before checksums existed loads with a warning (once per file and process).
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import warnings
from pathlib import Path

import torch

from qlam.atomic import atomic_write, atomic_write_text

CHECKSUM_KEY = "sha256"
# what torch's weights-only unpickler says when a file asks for a global (a function or a
# class: possibly code) that it does not allow
_FORBIDDEN = r"GLOBAL|global|unrecognized function|create new object|Can only build"
_WARNED_UNCHECKED: set[str] = set()


def _feed(h, obj) -> None:
    """Hash ``obj`` canonically: type tags, dict keys in sorted order, tensors by dtype,
    shape and bytes."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}".encode())
        for k in sorted(obj, key=repr):
            _feed(h, k)
            _feed(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        h.update(f"{type(obj).__name__[0]}{len(obj)}".encode())
        for v in obj:
            _feed(h, v)
    elif obj is None or isinstance(obj, (bool, int, float, str, torch.dtype, torch.Size)):
        h.update(f"{type(obj).__name__}:{obj!r};".encode())
    else:
        raise TypeError(f"cannot checksum a {type(obj).__name__} in a checkpoint")


def content_digest(ck: dict) -> str:
    """SHA-256 (hex) of a checkpoint dict's content, its ``sha256`` key left out."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in ck.items() if k != CHECKSUM_KEY})
    return h.hexdigest()


def atomic_save(ck: dict, path) -> None:
    """torch.save a checkpoint dict to ``path`` atomically, with its content checksum."""
    if not isinstance(ck, dict):
        raise TypeError(f"a checkpoint is a dict, got {type(ck).__name__}")
    ck = {**ck, CHECKSUM_KEY: content_digest(ck)}
    atomic_write(path, lambda f: torch.save(ck, f))


def append_jsonl(path, record: dict) -> None:
    """Append one JSON line (rewritten atomically, so a kill leaves the old file intact)."""
    path = Path(path)
    old = path.read_text() if path.exists() else ""
    atomic_write_text(path, old + json.dumps(record) + "\n")


def read_jsonl(path) -> list[dict]:
    """The JSON objects of a .jsonl file, one per line; a ValueError naming path:line for
    anything else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc})") from exc
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{i}: corrupt JSON line ({exc})") from exc
            if not isinstance(rec, dict):
                raise ValueError(f"{path}:{i}: expected a JSON object, got {type(rec).__name__}")
            out.append(rec)
    return out


def load_checkpoint(path, device="cpu") -> dict:
    """A checkpoint dict, read without executing anything from the file (weights-only
    unpickling) and checked against its stored checksum; clear errors for a missing,
    corrupt, foreign or tampered file. The ``sha256`` key is removed from the result."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ck = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # torch raises many kinds for a damaged file
        if isinstance(exc, pickle.UnpicklingError) and re.search(_FORBIDDEN, str(exc)):
            raise ValueError(
                f"{path} is not a safe qlam checkpoint: it asks to call or build objects other "
                "than tensors and plain containers (possibly code), so it was not loaded") from None
        raise ValueError(f"{path} is corrupt or not a torch checkpoint: {exc}") from exc
    if not isinstance(ck, dict):
        raise ValueError(f"{path} is not a qlam checkpoint (got {type(ck).__name__})")
    want = ck.pop(CHECKSUM_KEY, None)
    if want is None:
        if str(path.resolve()) not in _WARNED_UNCHECKED:
            _WARNED_UNCHECKED.add(str(path.resolve()))
            warnings.warn(f"{path} has no checksum (written before qlam stored one): its "
                          "integrity cannot be checked", stacklevel=2)
        return ck
    try:
        got = content_digest(ck)
    except TypeError as exc:
        raise ValueError(f"{path} is not a qlam checkpoint: {exc}") from exc
    if got != want:
        raise ValueError(f"{path} fails its checksum (content sha256 {got}, stored {want}): "
                         "the file was modified or damaged after it was written; refusing it")
    return ck
