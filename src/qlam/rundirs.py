"""Run directories: where a sweep's runs live and how far each got (``ROOT/TASK/MODEL/seedS``,
finished when its summary.json exists, interrupted when only its checkpoint.pt does), and
the lock that keeps a second process from training into a directory in use."""

from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, runs are not guarded
    fcntl = None

from qlam.data.npz_task import is_file_task


def run_dir(root: str | Path, task: str, model: str, seed: int) -> Path:
    """ROOT/TASK/MODEL/seedS (TASK: the file name without .npz for a task file)."""
    return Path(root) / (Path(task).stem if is_file_task(task) else task) / model / f"seed{seed}"


# settings that control a run but not its result: they may change on --resume
RUN_CONTROL = ("out", "label", "device", "threads", "compile", "checkpoint_minutes", "max_minutes",
               "stop_after_steps", "eval_batch_size", "log_every", "tensorboard")


def differing_settings(a: dict, b: dict, ignore=()) -> list[str]:
    """The settings (config keys, RUN_CONTROL and ``ignore`` aside) in which two runs' configs
    differ; a key one of them lacks (an older run) is not compared."""
    return [k for k in a if k in b and k not in RUN_CONTROL and k not in ignore
            and a[k] != b[k]]


# the fields a run summary must hold, and their JSON types (None: may be null)
SUMMARY_FIELDS = {"task": (str,), "model": (str,), "test_acc": (int, float)}
OPTIONAL_FIELDS = {"seed": (int,), "config": (dict,), "test_lengths": (dict,), "params": (int,),
                   "wall_s": (int, float), "epochs": (int, float), "chance": (int, float),
                   "length": (int,), "steps": (int,), "steps_per_epoch": (int,)}


def read_summary(path) -> dict:
    """A run's summary.json, checked to be one (the fields reports read, of their types); a
    ValueError saying what is wrong otherwise."""
    path = Path(path)
    try:
        s = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable ({exc})") from exc
    if not isinstance(s, dict):
        raise ValueError(f"{path}: not a qlam run summary")
    for key, types in (*SUMMARY_FIELDS.items(), *OPTIONAL_FIELDS.items()):
        v = s.get(key)
        if v is None and key not in SUMMARY_FIELDS:
            continue
        if (isinstance(v, bool) or not isinstance(v, types)
                or (isinstance(v, float) and not math.isfinite(v))):
            raise ValueError(f"{path}: not a qlam run summary ({key} is {v!r})")
    return s


def same_task(recorded: str, task: str) -> bool:
    """Whether a run's recorded task is ``task`` (a task file: the same file, however the
    path to it is written)."""
    if recorded == task:
        return True
    return is_file_task(recorded) and is_file_task(task) and (
        Path(recorded).resolve() == Path(task).resolve())


def run_status(path: Path) -> str:
    """'done' (a readable summary.json), 'resume' (checkpoint.pt) or 'new'."""
    try:
        read_summary(path / "summary.json")
        return "done"
    except ValueError:
        pass
    if (path / "checkpoint.pt").is_file():
        return "resume"
    return "new"


LOCK_NAME = ".lock"


class RunDirBusy(RuntimeError):
    """Another process is training into this run directory."""


@contextlib.contextmanager
def run_lock(out: Path):
    """Hold ``out/.lock`` (an exclusive advisory lock, with the holder's pid in it) while a
    run trains into ``out``; a second process raises :class:`RunDirBusy` instead of
    overwriting the first's files. The system releases it when the holder ends, however it
    ends, so a killed run leaves no stale lock. Not enforced where fcntl is missing."""
    if fcntl is None:
        yield
        return
    f = open(Path(out) / LOCK_NAME, "a+")  # noqa: SIM115 (held for the whole run)
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "?"
            raise RunDirBusy(f"{out} is in use: another qlam process (pid {holder}) is "
                             "training there; wait for it to end, or choose another --out") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        yield
    finally:
        f.close()
