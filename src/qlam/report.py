"""`qlam report`: the results table of finished run directories (``summary.json``), written
by every sweep and by ``qlam report DIR...``:

* ``TABLE.md``: test accuracy mean ± std (over seeds, sample std) per task and model (and
  for regression tasks the test MSE, the figure to quote), the paper's figure for reference,
  parameter count, mean wall time per run, epochs, runs;
* ``table.csv``: the same numbers, unrounded;
* ``accuracy.png``: grouped bars per task with std error bars and the paper's figures;
* for runs with test lengths (``--test-lengths``, generated tasks): a table of accuracy per
  test length in TABLE.md and ``length_TASK.png``, accuracy against length, a line per model.
"""

from __future__ import annotations

import csv
import io
import math
import os
import sys
from pathlib import Path

from qlam.atomic import atomic_write_text
from qlam.data.facts import GENERATED_TASKS, IMAGE_TASKS, TASKS
from qlam.data.generated import vocab_of
from qlam.data.npz_task import is_file_task
from qlam.rundirs import differing_settings, read_summary

# test accuracy (%) reported in the QLAM paper (sMNIST, sFashion-MNIST, sCIFAR-10)
PAPER = {
    "qlam": {"smnist": 92.6, "sfashion": 81.4, "scifar10": 53.6},
    "transformer": {"smnist": 91.3, "sfashion": 80.2, "scifar10": 53.0},
    "ssm": {"smnist": 91.2, "sfashion": 79.6, "scifar10": 51.8},
}
TASK_NAMES = {"smnist": "sMNIST", "psmnist": "psMNIST", "sfashion": "sFashion-MNIST",
              "scifar10": "sCIFAR-10", "parity": "Parity", "parity-running": "Parity (per prefix)",
              "s3": "S3 word problem", "s3-running": "S3 (running product)",
              "s5": "S5 word problem", "s5-running": "S5 (running product)",
              "a5": "A5 word problem", "a5-running": "A5 (running product)",
              "adding": "Adding", "copying": "Copying memory",
              "selective-copying": "Selective copying", "mqar": "MQAR", "listops": "ListOps"}
# table order
DEFAULT_MODELS = ("qlam", "qlam-mixed", "transformer", "ssm", "lstm", "gru", "rnn", "qlstm")
MODEL_NAMES = {"qlam": "QLAM", "qlam-mixed": "QLAM (mixed memory)", "transformer": "Transformer",
               "ssm": "SSM (S4D)", "lstm": "LSTM", "gru": "GRU", "rnn": "RNN", "qlstm": "QLSTM"}

VOCAB_MARK = "-vocab"  # mqar-vocab40: MQAR drawn from 40 tokens instead of its default


def _order(key: str, known: tuple[str, ...] | list[str]) -> tuple[int, str]:
    return (known.index(key) if key in known else len(known), key)


def _task_order(key: str) -> tuple[int, str]:
    return _order(key.partition(VOCAB_MARK)[0], TASKS)


def task_key(summary: dict) -> str:
    """The task a run's rows and curves belong to: its name, with the vocabulary appended
    (``mqar-vocab40``) where ``--vocab`` changed a generated task's from its default (another
    task: another chance level and difficulty); a task file by its path from here."""
    task = summary["task"]
    if is_file_task(task):  # one file however its path was written
        task = os.path.relpath(Path(task).resolve())
    vocab = (summary.get("config") or {}).get("vocab")
    if vocab is None or task not in GENERATED_TASKS or vocab == vocab_of(task):
        return task
    return f"{task}{VOCAB_MARK}{vocab}"


def task_title(key: str) -> str:
    """The name a :func:`task_key` is shown by: "MQAR, vocab 40"."""
    task, _, vocab = key.partition(VOCAB_MARK)
    return TASK_NAMES.get(task, task) + (f", vocab {int(vocab):,}" if vocab else "")


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
                s = read_summary(p)
            except ValueError as exc:
                if log:
                    print(f"skipping {exc}", file=log)
                continue
            s["_dir"], s["_mtime"] = str(p.parent), p.stat().st_mtime
            found[p.resolve()] = s
    return list(found.values())


def run_name(summary: dict) -> str:
    """The name a run's row carries: its config's ``label`` (a variant), else its model."""
    return (summary.get("config") or {}).get("label") or summary["model"]


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


def training_length(summary: dict) -> int | None:
    """The sequence length a generated task's run trained at (None for the image tasks, whose
    length their tokenization fixes, and for summaries that do not record it)."""
    if summary["task"] in IMAGE_TASKS:
        return None
    return summary.get("length") or (summary.get("config") or {}).get("length")


def seed_groups(summaries: list[dict]) -> dict[tuple[str, int | None, str], tuple[list, list]]:
    """(task, training length, run name) -> (runs: one per seed, the newest, by seed; all
    runs found): what every table and curve of the report counts."""
    groups: dict[tuple[str, int | None, str], list[dict]] = {}
    for s in summaries:
        groups.setdefault((task_key(s), training_length(s), run_name(s)), []).append(s)
    out = {}
    for key, found in groups.items():
        newest: dict = {}  # one run per seed: two runs of a seed are one sample, not two
        for s in sorted(found, key=lambda s: s.get("_mtime", 0)):
            newest[s.get("seed")] = s
        out[key] = (sorted(newest.values(), key=lambda s: s.get("seed") or 0), found)
    return out


def aggregate(summaries: list[dict]) -> list[dict]:
    """One row per (task, training length, model): accuracy mean/std (%), params, wall time,
    epochs trained, whether the time budget stopped any run before its schedule ended, runs
    (distinct seeds: of several runs of one seed the newest summary counts; the others are
    listed in ``duplicates``)."""
    rows = []
    for (task, length, model), (runs, found) in seed_groups(summaries).items():
        mean, std = _mean_std([100 * s["test_acc"] for s in runs])
        regression = any(s.get("target") == "regression" for s in runs)
        losses = [s["test_loss"] for s in runs if isinstance(s.get("test_loss"), int | float)]
        loss_mean, loss_std = _mean_std(losses) if regression and losses else (math.nan, math.nan)
        params = sorted({s.get("params") for s in runs if s.get("params") is not None})
        cfgs = [s.get("config") or {} for s in runs]
        rows.append({
            "task": task, "length": length, "model": model, "runs": len(runs),
            "test_acc_mean": mean, "test_acc_std": std,
            "test_mse_mean": loss_mean, "test_mse_std": loss_std,  # regression: the figure
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
            "duplicates": [s["_dir"] for s in found if s not in runs and "_dir" in s],
            "mixed_settings": sorted({k for c in cfgs[1:] for k in
                                      differing_settings(cfgs[0], c, ignore=("seed",))}),
        })
    rows.sort(key=lambda r: (_task_order(r["task"]), r["length"] or 0,
                             _order(r["model"], DEFAULT_MODELS)))
    return rows


def task_labels(rows: list[dict]) -> list[str]:
    """The task column of each row: the task's name, with the training length where the rows
    hold that task at more than one length (copying at 1,000 and at 2,000 tokens)."""
    lengths: dict[str, set] = {}
    for r in rows:
        lengths.setdefault(r["task"], set()).add(r.get("length"))
    return [task_title(r["task"])
            + (f", L = {r['length']:,}" if len(lengths[r["task"]]) > 1 and r.get("length")
               else "") for r in rows]


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
    subsets: dict[str, list[str]] = {}  # "trained on .., tested on .." -> the rows it holds for
    labels = task_labels(rows)
    for r, task in zip(rows, labels):
        acc = f"{r['test_acc_mean']:.2f} ± " + ("–" if math.isnan(r["test_acc_std"])
                                                else f"{r['test_acc_std']:.2f}")
        if not math.isnan(r.get("test_mse_mean", math.nan)):  # (lower is better)
            acc += f" (MSE {r['test_mse_mean']:.4g}" + ("" if math.isnan(r["test_mse_std"])
                                                       else f" ± {r['test_mse_std']:.2g}") + ")"
        mark = ""
        if r["limit_train"] != [None]:
            mark = "*"
            subsets.setdefault(f"trained on {', '.join(map(str, r['limit_train']))} examples, "
                               f"tested on {', '.join(map(str, r['n_test']))}", []).append(
                f"{task} {MODEL_NAMES.get(r['model'], r['model'])}")
        paper = "" if r["paper"] is None else f"{r['paper']:.1f}"
        epochs = f"{r['epochs_mean']:.3g}" + ("†" if r["time_capped"] else "")
        mark += "§" if r.get("mixed_settings") else ""
        lines.append(f"| {task} | {MODEL_NAMES.get(r['model'], r['model'])}{mark} | {acc} | {paper} | "
                     f"{_fmt_params(r)} | {_fmt_minutes(r['wall_s_mean'])} | "
                     f"{'/'.join('?' if t is None else str(t) for t in r['threads'])} | "
                     f"{epochs} | {r['runs']} |")
    text = "\n".join(lines) + "\n"
    notes += [f"\\* {'; '.join(names)}: {what}" for what, names in subsets.items()]
    for r, task in zip(rows, labels):
        if r.get("duplicates"):
            notes.append(f"‡ {task} {MODEL_NAMES.get(r['model'], r['model'])}: runs of a seed already "
                         f"counted were left out (the newest kept): {', '.join(r['duplicates'])}")
    for r, task in zip(rows, labels):
        if r.get("mixed_settings"):
            notes.append(f"§ {task} {MODEL_NAMES.get(r['model'], r['model'])}: its runs differ in "
                         f"{', '.join(r['mixed_settings'])} (give each setting a --label to "
                         "keep them apart)")
    if any(r["time_capped"] for r in rows):
        notes.append("† the time budget (`--max-minutes`) stopped training before the end of "
                     "its learning-rate schedule")
    if notes:
        text += "\n" + "\n\n".join(notes) + "\n"
    return text


def table_csv(rows: list[dict]) -> str:
    cols = ["task", "length", "model", "runs", "test_acc_mean", "test_acc_std", "test_mse_mean",
            "test_mse_std", "paper", "params_min",
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
    labels = task_labels(rows)
    tasks = list(dict.fromkeys(labels))  # a group per task (and length)
    models = list(dict.fromkeys(r["model"] for r in rows))
    width = 0.8 / max(len(models), 1)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(tasks) * max(1, len(models)) ** 0.5), 4))
    paper_label = "paper"
    for j, model in enumerate(models):
        xs, ys, es, px, py = [], [], [], [], []
        for i, task in enumerate(tasks):
            r = next((r for r, t in zip(rows, labels) if t == task and r["model"] == model),
                     None)
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
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("mean ± std over seeds")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    return save_figure(fig, png)


def length_curves(summaries: list[dict]) -> dict[str, dict[str, dict[int, list[float]]]]:
    """task -> model -> test length -> test accuracies (%, one per seed, the runs of
    :func:`seed_groups`) of the runs tested at other lengths; each run's own test set counts
    at its training length. Where a task's runs trained at several lengths, each length is a
    curve of its own ("QLAM, trained at L = 128")."""
    groups = {key: runs for key, (runs, _) in seed_groups(summaries).items()
              if any(s.get("test_lengths") for s in runs)}
    trained_at: dict[str, set] = {}
    for task, length, _ in groups:
        trained_at.setdefault(task, set()).add(length)
    curves: dict[str, dict[str, dict[int, list[float]]]] = {}
    for (task, length, name), runs in groups.items():
        if len(trained_at[task]) > 1:
            name = f"{MODEL_NAMES.get(name, name)}, trained at L = {length or 0:,}"
        per_model = curves.setdefault(task, {}).setdefault(name, {})
        for s in runs:
            points = {int(length or 0): s["test_acc"]}
            points.update({int(k): v["test_acc"] for k, v in (s.get("test_lengths") or {}).items()})
            for n, acc in points.items():
                per_model.setdefault(n, []).append(100 * acc)
    return curves


def length_markdown(curves, chance: dict[str, float] | None = None) -> str:
    """One table per task: a row per model, a column per test length (mean ± std, %)."""
    chance = chance or {}
    parts = []
    for task in sorted(curves, key=_task_order):
        models = curves[task]
        lengths = sorted({n for per in models.values() for n in per})
        head = f"### {task_title(task)}: test accuracy (%) by sequence length"
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
    length_TASK.png for runs tested at other lengths, where matplotlib is installed) into
    ``out``."""
    summaries = collect(dirs, log=log)
    rows = aggregate(summaries)
    curves = length_curves(summaries)
    chance = {task_key(s): s["chance"] for s in summaries if s.get("chance") is not None}
    out = Path(out)
    header = ("# Results\n\nTest accuracy on each task's test set (the official one for "
              "the image datasets, a seeded held-out one for generated tasks), mean ± sample "
              "std over seeds (`qlam report`); *Paper*: the figures reported in the QLAM "
              "paper.\n\n")
    body = markdown(rows) if rows else "No finished runs.\n"
    if curves:
        body += ("\n## Length generalisation\n\nTest accuracy on fresh test sets of each "
                 "length (the training length's own test set included); mean ± std over "
                 "seeds.\n\n"
                 + length_markdown(curves, chance))
    atomic_write_text(out / "TABLE.md", header + body)
    atomic_write_text(out / "table.csv", table_csv(rows))
    if plot and rows:
        from qlam.plots import PlotsUnavailable, accuracy_by_length

        try:
            bar_plot(rows, out / "accuracy.png")
            for task, models in curves.items():
                named = {MODEL_NAMES.get(m, m): v for m, v in
                         sorted(models.items(), key=lambda kv: _order(kv[0], DEFAULT_MODELS))}
                accuracy_by_length(named, out / f"length_{task}.png",
                                   title=task_title(task), chance=chance.get(task))
        except PlotsUnavailable as exc:
            if log:
                print(f"no plot: {exc}", file=log)
    return rows
