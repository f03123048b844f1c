"""Training scalars of one run: JSON lines in ``DIR/metrics.jsonl`` and, optionally,
TensorBoard event files in ``DIR`` itself (``tensorboard --logdir results`` then shows every
run of a sweep under its own path).

Two kinds of record go to metrics.jsonl: a *step* record every ``log_every`` optimiser steps
(``step``, ``epoch_frac`` = step / steps per epoch, ``train_loss`` and ``train_acc`` averaged
over the steps since the previous record, ``lr``, ``tokens_per_s``) and an *epoch* record at
the end of every epoch (the epoch's ``train_loss``/``train_acc``, ``val_loss``, ``val_acc``,
``lr``, ``tokens_per_s``, ``epoch``, ``step``, ``epoch_frac``). TensorBoard gets the same
numbers as ``train/loss``, ``train/accuracy``, ``train/lr``, ``train/tokens_per_s`` (step
records) and ``val/loss``, ``val/accuracy`` (epoch records), all against the global step.

On resume, records written after the checkpoint's step (by a run killed before its next
checkpoint) are dropped from metrics.jsonl and hidden in TensorBoard (``purge_step``), so a
resumed run logs every step once.
"""

from __future__ import annotations

import json
from pathlib import Path

from qlam.atomic import atomic_write_text
from qlam.store import append_jsonl, read_jsonl

STEP_TAGS = {"train_loss": "train/loss", "train_acc": "train/accuracy", "lr": "train/lr",
             "tokens_per_s": "train/tokens_per_s"}
EPOCH_TAGS = {"val_loss": "val/loss", "val_acc": "val/accuracy"}
EVENTS_GLOB = "events.out.tfevents.*"


def summary_writer(logdir: Path, purge_step: int | None = None):
    """torch's TensorBoard SummaryWriter, or a clear error when tensorboard is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ModuleNotFoundError as exc:  # torch imports the tensorboard package there
        raise RuntimeError("--tensorboard needs the tensorboard package: "
                           "pip install 'qlam[tensorboard]'") from exc
    return SummaryWriter(str(logdir), purge_step=purge_step)


class ScalarLog:
    """metrics.jsonl (+ TensorBoard) of the run in ``out``; ``resume_step``: the global step
    of the checkpoint resumed from (None: a fresh run, earlier event files are removed), and
    ``resume_epochs`` the epochs it completed.
    Does nothing where ``enabled`` is False (ranks other than 0)."""

    def __init__(self, out, *, tensorboard: bool = False, resume_step: int | None = None,
                 resume_epochs: int | None = None, enabled: bool = True):
        self.path = Path(out) / "metrics.jsonl"
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        if resume_step is None:
            for f in Path(out).glob(EVENTS_GLOB):
                f.unlink()
        elif self.path.is_file():
            recs = read_jsonl(self.path)
            # a kill after an epoch's record but before its checkpoint repeats the epoch's
            # end: records of epochs the checkpoint has not completed go too
            keep = [r for r in recs if r.get("step", 0) <= resume_step
                    and (resume_epochs is None or r.get("epoch", 0) <= resume_epochs)]
            if len(keep) < len(recs):
                atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in keep))
        if tensorboard:
            self.writer = summary_writer(Path(out), None if resume_step is None else resume_step + 1)

    def _write(self, record: dict, tags: dict) -> None:
        if not self.enabled:
            return
        append_jsonl(self.path, record)
        if self.writer is not None:
            for key, tag in tags.items():
                self.writer.add_scalar(tag, record[key], record["step"])
            self.writer.flush()

    def step(self, record: dict) -> None:
        """A step record (see the module docstring)."""
        self._write(record, STEP_TAGS)

    def epoch(self, record: dict) -> None:
        """An epoch record (see the module docstring)."""
        self._write(record, EPOCH_TAGS)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
