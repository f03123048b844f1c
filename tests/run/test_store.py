"""qlam.store and qlam.atomic: atomic writes leave the old file or the new one, never half of
one; loads name the problem; JSON lines append and read back."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from qlam import atomic
from qlam.store import append_jsonl, atomic_save, load_checkpoint, read_jsonl


def test_atomic_save_round_trips_and_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "sub" / "ck.pt"
    atomic_save({"w": torch.arange(3)}, path)  # creates the parent folder
    assert torch.equal(load_checkpoint(path)["w"], torch.arange(3))

    def broken(f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic.atomic_write(path, broken)
    assert torch.equal(load_checkpoint(path)["w"], torch.arange(3))
    assert sorted(p.name for p in path.parent.iterdir()) == ["ck.pt"]  # no temp file left


def test_atomic_files_get_the_umask_permissions(tmp_path):
    old = os.umask(0o027)
    try:
        path = atomic.atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # 0o666 & ~0o027, not mkstemp's 0o600


def test_temp_names_carry_the_writer_pid(tmp_path):
    seen = []

    def spy(f):
        seen.extend(p.name for p in tmp_path.iterdir())  # the temp file, while it is written

    atomic.atomic_write(tmp_path / "data.v1.npz", spy)
    assert seen[0].startswith(".data.v1.npz.") and seen[0].endswith(".tmp")
    assert atomic.writer_pid(seen[0]) == os.getpid()
    assert atomic.writer_pid("data.npz") is None


def test_jsonl_appends_and_names_a_corrupt_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, {"epoch": 1})
    append_jsonl(path, {"epoch": 2, "acc": 0.5})
    assert read_jsonl(path) == [{"epoch": 1}, {"epoch": 2, "acc": 0.5}]
    path.write_text(path.read_text() + "{not json\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl:3: corrupt JSON line"):
        read_jsonl(path)
    with pytest.raises(FileNotFoundError):
        read_jsonl(tmp_path / "nope.jsonl")
    path.write_text('{"epoch": 1}\n[1, 2]\n')  # JSON, but not a record (AttributeError later)
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: expected a JSON object, got list"):
        read_jsonl(path)
    path.write_bytes(b'{"epoch": 1}\n\xff\xfe\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl: not UTF-8 text"):
        read_jsonl(path)


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="corrupt or not a torch checkpoint"):
        load_checkpoint(bad)
    torch.save([1, 2], tmp_path / "list.pt")  # atomic_save takes checkpoint dicts only
    with pytest.raises(ValueError, match="not a qlam checkpoint"):
        load_checkpoint(tmp_path / "list.pt")


def test_an_atomic_write_syncs_its_directory_after_the_rename(tmp_path, monkeypatch):
    """Without the directory's fsync the rename could be lost in a machine crash, leaving the
    old file (or none) although the write had returned."""
    import os
    import stat

    synced, real_fsync, real_replace = [], os.fsync, os.replace
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (synced.append(
        ("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file", os.fstat(fd).st_ino)),
        real_fsync(fd))[-1])
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: (synced.append(("rename", None)),
                                                            real_replace(a, b))[-1])
    atomic.atomic_write_text(tmp_path / "sub" / "x.txt", "hello")
    assert [kind for kind, _ in synced] == ["file", "rename", "dir"]
    assert synced[-1][1] == os.stat(tmp_path / "sub").st_ino
