"""`qlam sweep` (a models x tasks x seeds grid of `qlam train` runs) and `qlam report`
(the results table from finished run directories).

Runs live in ``ROOT/TASK/MODEL/seedS``. A run whose ``summary.json`` exists is finished and
skipped; one with only a ``checkpoint.pt`` was interrupted and is resumed; so rerunning the
same command after a crash (or on a second day) continues the grid; ``--executor ray`` runs
every run as a Ray task, on this machine or a cluster (:mod:`qlam.cluster`). Every finished
run rewrites the table:

* ``TABLE.md``: test accuracy mean ± std (over seeds, sample std) per task and model, the
  paper's figure for reference, parameter count, mean wall time per run, epochs, runs;
* ``table.csv``: the same numbers, unrounded;
* ``accuracy.png``: grouped bars per task with std error bars and the paper's figures;
* for runs with test lengths (``--test-lengths``, generated tasks): a table of accuracy per
  test length in TABLE.md and ``length_TASK.png``, accuracy against length, a line per model.

Settings shared by every run come from TrainConfig flags (``--epochs``, ``--params``,
``--limit-train`` ...) and ``--config FILE`` (TOML/YAML); a ``[models.NAME]`` table in the
file overrides settings for one model (e.g. a smaller batch for ``qlstm``).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import shlex
import sys
import time
import traceback
from pathlib import Path

from qlam import train as training
from qlam.atomic import atomic_write_text
from qlam.config import add_config_args, args_to_dict, config_from_dict, read_config_file
from qlam.data.facts import TASKS
from qlam.models import REGISTRY
from qlam.rundirs import run_dir, run_status

# test accuracy (%) reported in the QLAM paper (sMNIST, sFashion-MNIST, sCIFAR-10)
PAPER = {
    "qlam": {"smnist": 92.6, "sfashion": 81.4, "scifar10": 53.6},
    "transformer": {"smnist": 91.3, "sfashion": 80.2, "scifar10": 53.0},
    "ssm": {"smnist": 91.2, "sfashion": 79.6, "scifar10": 51.8},
}
TASK_NAMES = {"smnist": "sMNIST", "psmnist": "psMNIST", "sfashion": "sFashion-MNIST",
              "scifar10": "sCIFAR-10", "parity": "Parity", "parity-running": "Parity (per prefix)",
              "s5": "S5 word problem", "s5-running": "S5 (running product)",
              "a5": "A5 word problem", "a5-running": "A5 (running product)",
              "adding": "Adding", "copying": "Copying memory",
              "selective-copying": "Selective copying", "mqar": "MQAR", "listops": "ListOps"}
MODEL_NAMES = {"qlam": "QLAM", "transformer": "Transformer", "ssm": "SSM (S4D)", "lstm": "LSTM",
               "gru": "GRU", "rnn": "RNN", "qlstm": "QLSTM"}
DEFAULT_MODELS = ("qlam", "transformer", "ssm", "lstm", "gru", "rnn", "qlstm")
GRID_KEYS = ("task", "model", "seed", "out")  # set by the sweep, not by flags
EXECUTORS = ("local", "ray")


def _order(key: str, known: tuple[str, ...] | list[str]) -> tuple[int, str]:
    return (known.index(key) if key in known else len(known), key)


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
        if t not in TASKS:
            raise ValueError(f"unknown task {t!r}; choose from {', '.join(TASKS)}")
    for m in per_model:
        if m not in REGISTRY:
            raise ValueError(f"[models.{m}] in the config: unknown model")
    bad = sorted(set(shared) & set(GRID_KEYS))
    if bad:
        raise ValueError(f"the sweep sets {', '.join(bad)} itself; remove them from the config")
    out = []
    for task in tasks:
        for model in models:
            for seed in seeds:
                path = run_dir(root, task, model, seed)
                values = {**shared, **per_model.get(model, {}), "task": task, "model": model,
                          "seed": seed, "out": str(path)}
                out.append((config_from_dict(values), run_status(path)))
    return out


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
            print(f"{tag}: finished, skipped", file=log)
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


# ---- the report -------------------------------------------------------------------------
def collect(dirs, log=sys.stderr) -> list[dict]:
    """Every readable summary.json under ``dirs`` (a run directory or any folder above)."""
    found: dict[Path, dict] = {}
    for d in dirs:
        d = Path(d)
        if not d.exists():
            raise FileNotFoundError(f"no such directory: {d}")
        paths = [d] if d.is_file() else sorted(d.rglob("summary.json"))
        for p in paths:
            try:
                s = json.loads(p.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                if log:
                    print(f"skipping {p}: {exc}", file=log)
                continue
            if not isinstance(s, dict) or "test_acc" not in s or "model" not in s or "task" not in s:
                if log:
                    print(f"skipping {p}: not a qlam run summary", file=log)
                continue
            s["_dir"] = str(p.parent)
            found[p.resolve()] = s
    return list(found.values())


def _mean_std(xs: list[float]) -> tuple[float, float]:
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, math.nan
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def epochs_trained(s: dict) -> float:
    """Epochs a run trained, fractional where the time budget stopped it inside one (summaries
    written before ``steps`` was recorded give the epochs begun)."""
    if s.get("steps") is not None and s.get("steps_per_epoch"):
        return s["steps"] / s["steps_per_epoch"]
    return float(s.get("epochs", 0))


def aggregate(summaries: list[dict]) -> list[dict]:
    """One row per (task, model): accuracy mean/std (%), params, wall time, epochs trained,
    whether the time budget stopped any run before its schedule ended, runs."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for s in summaries:
        groups.setdefault((s["task"], s["model"]), []).append(s)
    rows = []
    for (task, model), runs in groups.items():
        runs.sort(key=lambda s: s.get("seed", 0))
        mean, std = _mean_std([100 * s["test_acc"] for s in runs])
        params = sorted({s.get("params") for s in runs if s.get("params") is not None})
        cfgs = [s.get("config") or {} for s in runs]
        rows.append({
            "task": task, "model": model, "runs": len(runs),
            "test_acc_mean": mean, "test_acc_std": std,
            "paper": PAPER.get(model, {}).get(task),
            "params_min": params[0] if params else None,
            "params_max": params[-1] if params else None,
            "wall_s_mean": sum(s.get("wall_s", 0.0) for s in runs) / len(runs),
            "epochs_mean": sum(epochs_trained(s) for s in runs) / len(runs),
            "time_capped": sum(s.get("stopped") == "time budget" for s in runs),
            "threads": sorted({s.get("threads") for s in runs}, key=str),
            "seeds": " ".join(str(s.get("seed")) for s in runs),
            "limit_train": sorted({c.get("limit_train") for c in cfgs}, key=str),
            "n_test": sorted({s.get("n_test") for s in runs}, key=str),
        })
    rows.sort(key=lambda r: (_order(r["task"], TASKS), _order(r["model"], DEFAULT_MODELS)))
    return rows


def _fmt_params(r: dict) -> str:
    lo, hi = r["params_min"], r["params_max"]
    if lo is None:
        return "?"
    return f"{lo:,}" if lo == hi else f"{lo:,}-{hi:,}"


def _fmt_minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.2f} h"


def markdown(rows: list[dict]) -> str:
    lines = ["| Task | Model | Test accuracy (%) | Paper (%) | Params | Wall time / run | CPU threads "
             "| Epochs | Runs |",
             "|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for r in rows:
        acc = f"{r['test_acc_mean']:.2f} ± " + ("–" if math.isnan(r["test_acc_std"])
                                                else f"{r['test_acc_std']:.2f}")
        mark = ""
        if r["limit_train"] != [None]:
            mark = "*"
            notes.append(f"\\* {TASK_NAMES.get(r['task'], r['task'])} "
                         f"{MODEL_NAMES.get(r['model'], r['model'])}: "
                         f"trained on {', '.join(map(str, r['limit_train']))} examples, "
                         f"tested on {', '.join(map(str, r['n_test']))}")
        paper = "" if r["paper"] is None else f"{r['paper']:.1f}"
        epochs = f"{r['epochs_mean']:.3g}" + ("†" if r["time_capped"] else "")
        lines.append(f"| {TASK_NAMES.get(r['task'], r['task'])} | "
                     f"{MODEL_NAMES.get(r['model'], r['model'])}{mark} | {acc} | {paper} | "
                     f"{_fmt_params(r)} | {_fmt_minutes(r['wall_s_mean'])} | "
                     f"{'/'.join('?' if t is None else str(t) for t in r['threads'])} | "
                     f"{epochs} | {r['runs']} |")
    text = "\n".join(lines) + "\n"
    if any(r["time_capped"] for r in rows):
        notes.append("† the time budget (`--max-minutes`) stopped training before the end of "
                     "its learning-rate schedule")
    if notes:
        text += "\n" + "\n\n".join(notes) + "\n"
    return text


def table_csv(rows: list[dict]) -> str:
    cols = ["task", "model", "runs", "test_acc_mean", "test_acc_std", "paper", "params_min",
            "params_max", "wall_s_mean", "threads", "epochs_mean", "time_capped", "seeds",
            "limit_train", "n_test"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        vals = []
        for c in cols:
            v = r[c]
            if isinstance(v, list):
                v = " ".join("" if x is None else str(x) for x in v)
            elif isinstance(v, float) and math.isnan(v):
                v = ""
            vals.append("" if v is None else v)
        w.writerow(vals)
    return buf.getvalue()


def bar_plot(rows: list[dict], png: str | Path) -> Path:
    """Grouped bars (one group per task, one bar per model) with std error bars; the
    paper's figures as black diamonds."""
    from qlam.plots import pyplot, save_figure

    plt = pyplot()
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    width = 0.8 / max(len(models), 1)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(tasks) * max(1, len(models)) ** 0.5), 4))
    paper_label = "paper"
    for j, model in enumerate(models):
        xs, ys, es, px, py = [], [], [], [], []
        for i, task in enumerate(tasks):
            r = next((r for r in rows if r["task"] == task and r["model"] == model), None)
            if r is None:
                continue
            x = i - 0.4 + width * (j + 0.5)
            xs.append(x)
            ys.append(r["test_acc_mean"])
            es.append(0.0 if math.isnan(r["test_acc_std"]) else r["test_acc_std"])
            if r["paper"] is not None:
                px.append(x)
                py.append(r["paper"])
        ax.bar(xs, ys, width * 0.9, yerr=es, capsize=3, label=MODEL_NAMES.get(model, model))
        if px:
            ax.plot(px, py, "D", markersize=5, markerfacecolor="white", markeredgecolor="black",
                    linestyle="none", zorder=3, label=paper_label)
            paper_label = None  # one legend entry
    lo = min(r["test_acc_mean"] for r in rows)
    ax.set_ylim(max(0.0, lo - 15), 100)
    ax.set_xticks(range(len(tasks)), [TASK_NAMES.get(t, t) for t in tasks])
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("mean ± std over seeds")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    return save_figure(fig, png)


def length_curves(summaries: list[dict]) -> dict[str, dict[str, dict[int, list[float]]]]:
    """task -> model -> test length -> test accuracies (%, one per run) of the runs that
    were tested at other lengths; each run's own test set counts at its training length."""
    curves: dict[str, dict[str, dict[int, list[float]]]] = {}
    for s in summaries:
        extra = s.get("test_lengths") or {}
        if not extra:
            continue
        points = {int(s.get("length") or s.get("config", {}).get("length") or 0): s["test_acc"]}
        points.update({int(k): v["test_acc"] for k, v in extra.items()})
        per_model = curves.setdefault(s["task"], {}).setdefault(s["model"], {})
        for length, acc in points.items():
            per_model.setdefault(length, []).append(100 * acc)
    return curves


def length_markdown(curves, chance: dict[str, float] | None = None) -> str:
    """One table per task: a row per model, a column per test length (mean ± std, %)."""
    chance = chance or {}
    parts = []
    for task in sorted(curves, key=lambda t: _order(t, TASKS)):
        models = curves[task]
        lengths = sorted({n for per in models.values() for n in per})
        head = f"### {TASK_NAMES.get(task, task)}: test accuracy (%) by sequence length"
        if task in chance:
            head += f" (chance {100 * chance[task]:.3g} %)"
        lines = [head, "", "| Model | " + " | ".join(f"L = {n:,}" for n in lengths) + " |",
                 "|---|" + "---|" * len(lengths)]
        for model in sorted(models, key=lambda m: _order(m, DEFAULT_MODELS)):
            cells = []
            for n in lengths:
                accs = models[model].get(n)
                if not accs:
                    cells.append("")
                    continue
                mean, std = _mean_std(accs)
                cells.append(f"{mean:.1f}" + ("" if math.isnan(std) else f" ± {std:.1f}"))
            lines.append(f"| {MODEL_NAMES.get(model, model)} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def write_report(dirs, out, plot: bool = True, log=sys.stderr) -> list[dict]:
    """Collect, aggregate and write TABLE.md, table.csv (and accuracy.png, and
    length_TASK.png for runs tested at other lengths) into ``out``."""
    summaries = collect(dirs, log=log)
    rows = aggregate(summaries)
    curves = length_curves(summaries)
    chance = {s["task"]: s["chance"] for s in summaries if s.get("chance") is not None}
    out = Path(out)
    header = ("# Results\n\nTest accuracy on the official test set, mean ± sample std over seeds "
              "(`qlam report`); *Paper*: the figures reported in the QLAM paper.\n\n")
    body = markdown(rows) if rows else "No finished runs.\n"
    if curves:
        body += ("\n## Length generalisation\n\nTest accuracy on fresh test sets of each "
                 "length (the training length's own test set included); mean ± std over "
                 "seeds.\n\n"
                 + length_markdown(curves, chance))
    atomic_write_text(out / "TABLE.md", header + body)
    atomic_write_text(out / "table.csv", table_csv(rows))
    if plot and rows:
        from qlam.plots import accuracy_by_length

        try:
            bar_plot(rows, out / "accuracy.png")
            for task, models in curves.items():
                named = {MODEL_NAMES.get(m, m): v for m, v in
                         sorted(models.items(), key=lambda kv: _order(kv[0], DEFAULT_MODELS))}
                accuracy_by_length(named, out / f"length_{task}.png",
                                   title=TASK_NAMES.get(task, task), chance=chance.get(task))
        except RuntimeError as exc:  # matplotlib missing
            if log:
                print(f"no plot: {exc}", file=log)
    return rows


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
    out = args.out or args.dirs[0]
    rows = write_report(args.dirs, out, plot=not args.no_plot)
    if not rows:
        print(f"no finished runs (summary.json) under {', '.join(args.dirs)}", file=sys.stderr)
        return 1
    print(markdown(rows), end="")
    print(f"wrote {Path(out) / 'TABLE.md'}, {Path(out) / 'table.csv'}"
          + ("" if args.no_plot else f", {Path(out) / 'accuracy.png'}"), file=sys.stderr)
    return 0


def register(sub) -> None:
    p = sub.add_parser("sweep", help="train a grid of models x tasks x seeds and tabulate it",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated model names")
    p.add_argument("--tasks", default="smnist", help="comma-separated task names")
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
