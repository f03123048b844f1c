"""`qlam sweep --executor ray`: every run of the grid is one Ray task.

The driver (the ``qlam sweep`` process) plans the grid as usual, submits each unfinished run
as a task that asks for ``--threads`` CPUs (1 when unset) and ``--gpus-per-run`` GPUs (1
when unset and ``--device cuda``), and rewrites the table whenever a run finishes. A task
decides on its own node what to do with its run directory: a finished run (summary.json)
is left alone, an interrupted one (checkpoint.pt) is resumed, a new one trained; its output
goes to ``DIR/train.log``. A task that raises is reported with that log's path and the
other tasks go on; a worker that dies (a lost node) is retried by Ray, and the retry
resumes from the last checkpoint.

``--address`` picks the Ray instance: none starts a local one for the sweep (stopped at the
end), ``auto`` joins the cluster this machine belongs to (``ray start``), ``HOST:PORT`` a
given head node. On a cluster the results root must be storage that every node and the
driver see at the same path (NFS, a parallel file system), and qlam and its data cache must
be installed on every node. Ctrl-C in the driver cancels the tasks: each writes its
checkpoint and stops, so rerunning the same command resumes the grid.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path

from qlam import train as training
from qlam.rundirs import run_status

LOG_NAME = "train.log"
CANCEL_WAIT_S = 300.0  # how long Ctrl-C waits for cancelled runs to write their checkpoints


def ray_module():
    """The ``ray`` package, or a clear error naming the extra that installs it."""
    try:
        import ray
    except ImportError as exc:
        raise RuntimeError("--executor ray needs Ray: pip install 'qlam[cluster]' "
                           "(or run the sweep with the default --executor local)") from exc
    return ray


def run_logged(config: dict, command: str | None = None) -> dict:
    """Train the run ``config`` describes where this is called (a Ray worker), its output
    appended to ``DIR/train.log``: skipped when finished, resumed from its checkpoint when
    interrupted. Returns {"status": "done"|"resume"|"new", "summary": dict} (an early stop's
    summary has no test_acc); an exception is written to the log and raised again."""
    cfg = training.config_from_dict(config)
    out = Path(cfg.out)
    status = run_status(out)
    if status == "done":
        return {"status": status, "summary": json.loads((out / "summary.json").read_text())}
    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOG_NAME, "a") as log, contextlib.redirect_stdout(log), \
            contextlib.redirect_stderr(log):
        print(f"== {'resuming' if status == 'resume' else 'training'} {out}", file=log, flush=True)
        try:
            summary = training.train(cfg, resume=status == "resume", command=command)
        except BaseException:
            traceback.print_exc(file=log)
            raise
    return {"status": status, "summary": summary}


def _error_text(exc: BaseException) -> str:
    """The user's exception inside a Ray task error, in one line."""
    cause = getattr(exc, "cause", None) or exc
    return f"{type(cause).__name__}: {str(cause).strip().splitlines()[-1] if str(cause).strip() else ''}"


def run_on_ray(todo, *, address: str | None = None, gpus: float = 0.0,
               command: str | None = None, log=sys.stderr) -> Iterator[tuple]:
    """Submit every (tag, TrainConfig, status) of ``todo`` as a Ray task; yield
    (tag, cfg, status, summary, error) as they end, in the order they end (error: None or
    "message; log: PATH")."""
    ray = ray_module()
    started = not ray.is_initialized()
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    if started:  # Ray installs its own SIGTERM handler in the driver: restored at the end
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    pending = {}
    try:
        task = ray.remote(run_logged)
        for tag, cfg, status in todo:
            n_gpus = gpus or (1 if cfg.device.startswith("cuda") else 0)
            ref = task.options(num_cpus=cfg.threads or 1, num_gpus=n_gpus, max_retries=2,
                               name=f"qlam {cfg.task} {cfg.model} seed{cfg.seed}").remote(
                dataclasses.asdict(cfg), command)
            pending[ref] = (tag, cfg, status)
            print(f"{tag}: submitted ({status}), log {Path(cfg.out) / LOG_NAME}", file=log)
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    yield _outcome(ray, ref, pending.pop(ref))
        except KeyboardInterrupt:
            print(f"interrupted: cancelling {len(pending)} run(s); each writes its checkpoint",
                  file=log)
            for ref in pending:
                ray.cancel(ref)
            ray.wait(list(pending), num_returns=len(pending), timeout=CANCEL_WAIT_S)
            for tag, cfg, status in pending.values():
                yield tag, cfg, status, {"stopped": "interrupted"}, None
            pending.clear()
    finally:
        for ref in pending:  # the caller stopped early (e.g. --fail-fast)
            ray.cancel(ref)
        if started:
            ray.shutdown()
            if threading.current_thread() is threading.main_thread():
                for s, handler in saved.items():
                    signal.signal(s, handler)


def _outcome(ray, ref, item) -> tuple:
    tag, cfg, status = item
    try:
        res = ray.get(ref)
    except Exception as exc:  # noqa: BLE001 - RayTaskError, a lost worker, a cancelled task
        return tag, cfg, status, None, f"{_error_text(exc)}; log: {Path(cfg.out) / LOG_NAME}"
    return tag, cfg, res["status"], res["summary"], None


__all__ = ["run_on_ray", "run_logged", "ray_module", "LOG_NAME"]
