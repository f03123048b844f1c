"""Where a sweep's runs live and how far each got: ``ROOT/TASK/MODEL/seedS``, finished when
its summary.json exists, interrupted when only its checkpoint.pt does."""

from __future__ import annotations

from pathlib import Path

from qlam.data.npz_task import is_file_task


def run_dir(root: str | Path, task: str, model: str, seed: int) -> Path:
    """ROOT/TASK/MODEL/seedS (TASK: the file name without .npz for a task file)."""
    return Path(root) / (Path(task).stem if is_file_task(task) else task) / model / f"seed{seed}"


def run_status(path: Path) -> str:
    """'done' (summary.json), 'resume' (checkpoint.pt only) or 'new'."""
    if (path / "summary.json").is_file():
        return "done"
    if (path / "checkpoint.pt").is_file():
        return "resume"
    return "new"
