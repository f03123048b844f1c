"""`qlam sweep` (a models x tasks x seeds grid of `qlam train` runs) and `qlam report`
(the results table from finished run directories).

Runs live in ``ROOT/TASK/MODEL/seedS``. A run whose ``summary.json`` exists is finished and
skipped; one with only a ``checkpoint.pt`` was interrupted and is resumed; so rerunning the
same command after a crash (or on a second day) continues the grid; ``--executor ray`` runs
every run as a Ray task, on this machine or a cluster (:mod:`qlam.cluster`). Every finished
run rewrites the table (:mod:`qlam.report`).

Settings shared by every run come from TrainConfig flags (``--epochs``, ``--params``,
``--limit-train`` ...) and ``--config FILE`` (TOML/YAML); a ``[models.NAME]`` table in the
file overrides settings for one model (e.g. a smaller batch for ``qlstm``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
import time
import traceback
from pathlib import Path

from qlam import train as training
from qlam.config import (
    add_config_args,
    args_to_dict,
    config_from_dict,
    drop_unused_model_options,
    read_config_file,
)
from qlam.data.facts import TASKS
from qlam.data.npz_task import is_file_task
from qlam.models import REGISTRY
from qlam.plots import available as plots_available
from qlam.report import DEFAULT_MODELS, markdown, write_report
from qlam.rundirs import differing_settings, read_summary, run_dir, run_status, same_task

GRID_KEYS = ("task", "model", "seed", "out")  # set by the sweep, not by flags
EXECUTORS = ("local", "ray")


def parse_seeds(text: str) -> list[int]:
    """'0-9' (inclusive range), '0,3,5', or a mix: '0-2,7'."""
    seeds: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        try:
            lo_i, hi_i = int(lo), int(hi or lo)
        except ValueError:
            raise ValueError(f"bad seed list {text!r}: use e.g. 0-9 or 0,1,2") from None
        if lo_i < 0 or hi_i < lo_i:
            raise ValueError(f"bad seed range {part!r} in {text!r}")
        seeds.extend(range(lo_i, hi_i + 1))
    if not seeds:
        raise ValueError(f"bad seed list {text!r}: no seeds")
    return list(dict.fromkeys(seeds))


def _names(text: str, what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError(f"no {what} given")
    return list(dict.fromkeys(names))


# ---- the grid ---------------------------------------------------------------------------
def plan(root, models, tasks, seeds, shared: dict, per_model: dict | None = None):
    """[(TrainConfig, status)] for every (task, model, seed), tasks outermost."""
    per_model = per_model or {}
    for m in models:
        if m not in REGISTRY:
            raise ValueError(f"unknown model {m!r}; choose from {', '.join(sorted(REGISTRY))}")
    for t in tasks:
        if t not in TASKS and not is_file_task(t):
            raise ValueError(f"unknown task {t!r}; choose from {', '.join(TASKS)} or give a "
                             f".npz file of your own sequences")
        if is_file_task(t) and not Path(t).is_file():
            raise FileNotFoundError(f"task file not found: {t}")
    for m, values in per_model.items():
        if m not in REGISTRY:
            raise ValueError(f"[models.{m}] in the config: unknown model")
        fixed = sorted(set(values) & set(GRID_KEYS))
        if fixed:  # (they had been silently overridden by the grid's)
            raise ValueError(f"[models.{m}] in the config sets {', '.join(fixed)}, which the "
                             "sweep sets itself; remove them")
    bad = sorted(set(shared) & set(GRID_KEYS))
    if bad:
        raise ValueError(f"the sweep sets {', '.join(bad)} itself; remove them from the config")
    homes = {}  # a task's folder -> the task (task files named alike would share one)
    for task in tasks:
        home = run_dir(root, task, "m", 0).parent.parent
        if home in homes:
            raise ValueError(f"tasks {homes[home]} and {task} would share the run folder {home}: "
                             "give the task files different names")
        homes[home] = task
    out = []
    for task in tasks:
        for model in models:
            for seed in seeds:
                path = run_dir(root, task, model, seed)
                values = {**shared, **per_model.get(model, {}), "task": task, "model": model,
                          "seed": seed, "out": str(path)}
                status = run_status(path)
                recorded = read_summary(path / "summary.json")["task"] if status == "done" else task
                if not same_task(recorded, task):
                    raise ValueError(f"{path} holds a finished run of {recorded}, not of {task} "
                                     "(their names give the same folder): rename the task "
                                     "file or use another --root")
                out.append((config_from_dict(values), status))
    return out


def _other_settings(cfg) -> str:
    """What a finished run's recorded settings differ in from this sweep's (a setting the
    sweep leaves at None takes whatever the run resolved), as a remark for its line."""
    planned = {k: v for k, v in dataclasses.asdict(drop_unused_model_options(cfg)).items()
               if v is not None}
    recorded = read_summary(Path(cfg.out) / "summary.json").get("config") or {}
    keys = differing_settings(planned, recorded, ignore=("seed",))
    if not keys:
        return ""
    what = ", ".join(f"{k} {recorded[k]!r} there, {planned[k]!r} here" for k in keys)
    return f" (with other settings: {what}; use another --root to run these)"


def sweep(root, models, tasks, seeds, shared: dict | None = None, per_model: dict | None = None,
          command: str | None = None, keep_going: bool = True, plot: bool = True,
          log=sys.stderr, executor: str = "local", address: str | None = None,
          gpus: float = 0.0) -> dict:
    """Run the grid (skipping finished runs, resuming interrupted ones) and write the table.
    ``executor``: "local" (one run after the other in this process) or "ray" (every run a
    Ray task, see :mod:`qlam.cluster`; ``address`` and ``gpus`` per run apply there).
    Returns counts {'done', 'skipped', 'resumed'} and lists 'failed': [(dir, error)] (an
    exception) and 'stopped': [(dir, reason)] (preempted or interrupted, resumable from its
    checkpoint)."""
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; choose from {', '.join(EXECUTORS)}")
    runs = plan(root, models, tasks, seeds, shared or {}, per_model)
    result = {"done": 0, "skipped": 0, "resumed": 0, "failed": [], "stopped": []}
    todo = []
    for i, (cfg, status) in enumerate(runs, 1):
        tag = f"[{i}/{len(runs)}] {cfg.task} {cfg.model} seed {cfg.seed}"
        if status == "done":
            result["skipped"] += 1
            print(f"{tag}: finished, skipped{_other_settings(cfg)}", file=log)
        else:
            todo.append((tag, cfg, status))
    if executor == "ray":
        from qlam.cluster import run_on_ray

        outcomes = run_on_ray(todo, address=address, gpus=gpus, command=command, log=log)
    else:
        outcomes = _run_local(todo, command, log, keep_going)
    try:
        for tag, cfg, status, summary, error in outcomes:
            if error is not None:
                if not keep_going:
                    raise RuntimeError(f"{cfg.out}: {error}")
                result["failed"].append((cfg.out, error))
                print(f"{tag}: FAILED: {error}", file=log)
                continue
            if "test_acc" not in summary:  # stopped early (preemption, signal): not finished
                result["stopped"].append((cfg.out, str(summary.get("stopped"))))
                if summary.get("stopped") == "interrupted" and executor == "local":
                    print(f"{tag}: interrupted; rerun the same sweep to resume", file=log)
                    break  # the user stopped the sweep
                continue
            result["done"] += 1
            result["resumed"] += status == "resume"
            print(f"{tag}: test accuracy {summary['test_acc']:.4f}", file=log)
            if _is_rank0():
                write_report([root], root, plot=plot, log=None)
            if summary.get("signalled") and executor == "local":
                print(f"{tag}: interrupted after it finished; rerun the same sweep to go on",
                      file=log)
                result["stopped"].append((cfg.out, "interrupted"))
                break  # the user stopped the sweep
    finally:
        outcomes.close()
    if _is_rank0():
        write_report([root], root, plot=plot, log=log)
    return result


def _run_local(todo, command, log, keep_going: bool = True):
    """The local executor: train each (tag, cfg, status) in turn in this process, yielding
    (tag, cfg, status, summary, error) like :func:`qlam.cluster.run_on_ray` (an exception
    propagates when not ``keep_going``)."""
    for tag, cfg, status in todo:
        print(f"{tag}: {'resuming' if status == 'resume' else 'training'} in {cfg.out}", file=log)
        try:
            summary = training.train(cfg, resume=status == "resume", command=command)
        except Exception as exc:  # noqa: BLE001 - one broken run must not stop the grid
            if not keep_going:
                raise
            traceback.print_exc(file=log)
            yield tag, cfg, status, None, f"{type(exc).__name__}: {exc}"
            continue
        yield tag, cfg, status, summary, None


def _is_rank0() -> bool:
    return os.environ.get("RANK", "0") == "0"


# ---- CLI --------------------------------------------------------------------------------
def cmd_sweep(args) -> int:
    shared = read_config_file(args.config) if args.config else {}
    per_model = shared.pop("models", {}) or {}
    if not isinstance(per_model, dict) or not all(isinstance(v, dict) for v in per_model.values()):
        raise ValueError("[models] in the config must hold one table per model name")
    shared.update(args_to_dict(args, skip=GRID_KEYS))
    models, tasks, seeds = _names(args.models, "models"), _names(args.tasks, "tasks"), parse_seeds(args.seeds)
    if args.dry_run:
        for cfg, status in plan(args.root, models, tasks, seeds, shared, per_model):
            print(f"{status:7s} {cfg.out}")
        return 0
    command = "qlam " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    t0 = time.time()
    if args.executor == "ray":
        from qlam.cluster import ray_module

        ray_module()  # a clear error before anything runs when Ray is missing
    elif args.address is not None or args.gpus_per_run:
        raise ValueError("--address and --gpus-per-run apply to --executor ray only")
    res = sweep(args.root, models, tasks, seeds, shared, per_model, command=command,
                keep_going=not args.fail_fast, plot=not args.no_plot, executor=args.executor,
                address=args.address, gpus=args.gpus_per_run)
    print(f"sweep: {res['done']} run(s) trained ({res['resumed']} resumed), {res['skipped']} "
          f"already finished, {len(res['stopped'])} stopped (rerun to resume), "
          f"{len(res['failed'])} failed, {(time.time() - t0) / 60:.1f} min; "
          f"table in {Path(args.root) / 'TABLE.md'}", file=sys.stderr)
    for path, why in res["stopped"]:
        print(f"  stopped: {path}: {why}", file=sys.stderr)
    for path, err in res["failed"]:
        print(f"  failed: {path}: {err}", file=sys.stderr)
    return 1 if res["failed"] or res["stopped"] else 0


def cmd_report(args) -> int:
    first = Path(args.dirs[0])
    out = args.out or (first.parent if first.is_file() else first)  # (a summary.json given)
    rows = write_report(args.dirs, out, plot=not args.no_plot, log=sys.stderr)
    if not rows:
        print(f"no finished runs (summary.json) under {', '.join(args.dirs)}", file=sys.stderr)
        return 1
    print(markdown(rows), end="")
    drew = not args.no_plot and plots_available()
    print(f"wrote {Path(out) / 'TABLE.md'}, {Path(out) / 'table.csv'}"
          + (f", {Path(out) / 'accuracy.png'}" if drew else ""), file=sys.stderr)
    return 0


def register(sub) -> None:
    p = sub.add_parser("sweep", help="train a grid of models x tasks x seeds and tabulate it",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated model names")
    p.add_argument("--tasks", default="smnist",
                   help="comma-separated task names (smnist, psmnist, sfashion, scifar10) or "
                        ".npz files of your own sequences (format: qlam.data.npz_task)")
    p.add_argument("--seeds", default="0-9", help="seeds: a range 0-9 and/or a list 0,1,5")
    p.add_argument("--root", default="results", help="runs go to ROOT/TASK/MODEL/seedS")
    p.add_argument("--config", help="TOML/YAML of shared settings; [models.NAME] tables per model")
    p.add_argument("--dry-run", action="store_true", help="list the runs and their status only")
    p.add_argument("--fail-fast", action="store_true", help="stop at the first failing run")
    p.add_argument("--no-plot", action="store_true", help="skip accuracy.png")
    p.add_argument("--executor", default="local", choices=EXECUTORS,
                   help="local: one run after the other here; ray: every run a Ray task "
                        "(pip install 'qlam[cluster]')")
    p.add_argument("--address", default=None,
                   help="Ray instance for --executor ray: auto (the cluster this machine "
                        "joined) or HOST:PORT (default: a local instance for this sweep)")
    p.add_argument("--gpus-per-run", type=float, default=0.0, metavar="N",
                   help="GPUs each Ray task asks for (default 0; CPUs per run: --threads)")
    add_config_args(p, skip=GRID_KEYS)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("report", help="results table from finished run directories")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="run directories or folders above them")
    p.add_argument("--out", default=None, help="where TABLE.md/table.csv/accuracy.png go "
                                               "(default: the first DIR)")
    p.add_argument("--no-plot", action="store_true", help="skip accuracy.png")
    p.set_defaults(func=cmd_report)
