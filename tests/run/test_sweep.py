"""qlam sweep (skip finished runs, resume interrupted ones) and qlam report (the table)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from plots_check import check_plot

import qlam.train as T
from qlam import report
from qlam import sweep as S
from qlam.cli import main
from qlam.data.tasks import Split, Task


def fake_summary(path, task="smnist", model="qlam", seed=0, acc=0.9, params=1000, wall=60.0,
                 fields=None, **config):
    path.mkdir(parents=True, exist_ok=True)
    s = {"task": task, "model": model, "seed": seed, "test_acc": acc, "params": params,
         "wall_s": wall, "epochs": 3, "n_test": 10000, "threads": 1,
         "config": {"limit_train": None, **config}, **(fields or {})}
    (path / "summary.json").write_text(json.dumps(s))
    return s


def test_parse_seeds():
    assert S.parse_seeds("0-9") == list(range(10))
    assert S.parse_seeds("0,3, 5") == [0, 3, 5]
    assert S.parse_seeds("0-2,7,1") == [0, 1, 2, 7]
    for bad in ("", "a", "3-1", "-1"):
        with pytest.raises(ValueError):
            S.parse_seeds(bad)


def test_sweep_skips_finished_and_resumes_interrupted(tmp_path, monkeypatch):
    calls = []

    def fake_train(cfg, resume=False, command=None):
        calls.append((cfg.model, cfg.seed, resume))
        if cfg.model == "gru" and cfg.seed == 1:
            raise RuntimeError("boom")
        return fake_summary(Path(cfg.out), cfg.task, cfg.model, cfg.seed, 0.5 + 0.1 * cfg.seed,
                            epochs_cfg=cfg.epochs)

    monkeypatch.setattr(T, "train", fake_train)
    root = tmp_path / "results"
    fake_summary(S.run_dir(root, "smnist", "lstm", 0), model="lstm", acc=0.7)  # finished
    S.run_dir(root, "smnist", "lstm", 1).mkdir(parents=True)
    (S.run_dir(root, "smnist", "lstm", 1) / "checkpoint.pt").write_bytes(b"x")  # interrupted
    statuses = [st for _, st in S.plan(root, ["lstm", "gru"], ["smnist"], [0, 1], {})]
    assert statuses == ["done", "resume", "new", "new"]

    res = S.sweep(root, ["lstm", "gru"], ["smnist"], [0, 1], {"epochs": 2}, plot=False)
    assert calls == [("lstm", 1, True), ("gru", 0, False), ("gru", 1, False)]
    assert res["skipped"] == 1 and res["done"] == 2 and res["resumed"] == 1
    assert [p for p, _ in res["failed"]] == [str(S.run_dir(root, "smnist", "gru", 1))]
    assert res["stopped"] == []
    table = (root / "TABLE.md").read_text()
    assert "| sMNIST | LSTM | 65.00 ± 7.07 |" in table  # seeds 0 (70 %) and 1 (60 %)
    assert "| sMNIST | GRU | 50.00 ± – |" in table

    calls.clear()  # rerun: only the failed run is tried again
    S.sweep(root, ["lstm", "gru"], ["smnist"], [0, 1], {"epochs": 2}, plot=False)
    assert calls == [("gru", 1, False)]


def test_interrupted_run_stops_the_sweep(tmp_path, monkeypatch):
    calls = []

    def fake_train(cfg, resume=False, command=None):
        calls.append((cfg.seed, resume))
        if cfg.seed == 0 and not resume:  # SIGTERM during the first run
            (Path(cfg.out) / "checkpoint.pt").parent.mkdir(parents=True, exist_ok=True)
            (Path(cfg.out) / "checkpoint.pt").write_bytes(b"x")
            return {"stopped": "interrupted", "global_step": 5}
        return fake_summary(Path(cfg.out), cfg.task, cfg.model, cfg.seed)

    monkeypatch.setattr(T, "train", fake_train)
    root = tmp_path / "results"
    res = S.sweep(root, ["lstm"], ["smnist"], [0, 1, 2], {}, plot=False)
    assert calls == [(0, False)] and res["done"] == 0  # seeds 1, 2 not started
    assert res["failed"] == [] and res["stopped"] == [(str(S.run_dir(root, "smnist", "lstm", 0)),
                                                       "interrupted")]
    S.sweep(root, ["lstm"], ["smnist"], [0, 1, 2], {}, plot=False)  # the same command resumes
    assert calls == [(0, False), (0, True), (1, False), (2, False)]


def test_a_stop_asked_for_after_a_runs_training_stops_the_sweep(use_task, tmp_path,
                                                               monkeypatch):
    """Ctrl-C during a run's final test evaluation: the run finishes (its summary whole),
    and the sweep stops there instead of going on to the next run (the signal was lost)."""
    import os
    import signal

    from tiny_tasks import tiny_task

    use_task(tiny_task)
    real = T.evaluate

    def evaluate(model, task, split, *args, **kwargs):
        if split == "test":
            os.kill(os.getpid(), signal.SIGINT)  # handled by train: a flag, no exception
        return real(model, task, split, *args, **kwargs)

    monkeypatch.setattr(T, "evaluate", evaluate)
    root = tmp_path / "grid"
    res = S.sweep(root, ["gru"], ["smnist"], [0, 1], {"epochs": 1, "d_model": 8,
                                                      "n_layers": 1, "batch_size": 8},
                  plot=False)
    first = str(S.run_dir(root, "smnist", "gru", 0))
    assert res["done"] == 1 and res["stopped"] == [(first, "interrupted")]
    assert (Path(first) / "summary.json").is_file()
    assert not S.run_dir(root, "smnist", "gru", 1).exists()  # not started


def test_a_models_table_may_not_set_what_the_grid_sets(tmp_path):
    """[models.NAME] seed or out had been silently replaced by the grid's."""
    for key, value in (("seed", 3), ("out", "elsewhere")):
        with pytest.raises(ValueError, match=rf"\[models.gru\] in the config sets {key}, "
                                             r"which the sweep sets itself"):
            S.plan(tmp_path, ["gru"], ["smnist"], [0], {}, {"gru": {key: value}})


def test_sweep_rejects_bad_grids(tmp_path):
    with pytest.raises(ValueError, match="unknown model"):
        S.plan(tmp_path, ["nope"], ["smnist"], [0], {})
    with pytest.raises(ValueError, match="unknown task"):
        S.plan(tmp_path, ["gru"], ["nope"], [0], {})
    with pytest.raises(ValueError, match="sets seed"):
        S.plan(tmp_path, ["gru"], ["smnist"], [0], {"seed": 3})
    with pytest.raises(ValueError, match="unknown config keys"):
        S.plan(tmp_path, ["gru"], ["smnist"], [0], {"epoch": 3})


def test_report_table_csv_and_plot(tmp_path, capsys):
    runs = tmp_path / "runs"
    for seed, acc in enumerate([0.92, 0.93, 0.94]):
        fake_summary(runs / "smnist" / "qlam" / f"seed{seed}", seed=seed, acc=acc, params=65034)
    fake_summary(runs / "smnist" / "transformer" / "seed0", model="transformer", acc=0.9,
                 params=67850, limit_train=1000)
    fake_summary(runs / "smnist" / "gru" / "seed0", model="gru", acc=0.88, limit_train=1000)
    fake_summary(runs / "sfashion" / "ssm" / "seed0", task="sfashion", model="ssm", acc=0.8)
    # stopped by the time budget 3/4 into its third epoch (300 of 400 steps per epoch done)
    fake_summary(runs / "sfashion" / "gru" / "seed0", task="sfashion", model="gru", acc=0.85,
                 fields={"stopped": "time budget", "steps": 1100, "steps_per_epoch": 400})
    (runs / "broken").mkdir()
    (runs / "broken" / "summary.json").write_text("{not json")

    rows = report.aggregate(report.collect([runs], log=None))
    assert [(r["task"], r["model"], r["runs"]) for r in rows] == [
        ("smnist", "qlam", 3), ("smnist", "transformer", 1), ("smnist", "gru", 1),
        ("sfashion", "ssm", 1), ("sfashion", "gru", 1)]
    assert [r["epochs_mean"] for r in rows] == [3, 3, 3, 3, 2.75]
    assert [r["time_capped"] for r in rows] == [0, 0, 0, 0, 1]
    assert rows[0]["test_acc_mean"] == pytest.approx(93.0)
    assert rows[0]["test_acc_std"] == pytest.approx(1.0)  # sample std
    assert math.isnan(rows[1]["test_acc_std"])
    assert [r["paper"] for r in rows] == [92.6, 91.3, None, 79.6, None]

    out = tmp_path / "report"
    assert main(["report", str(runs), "--out", str(out)]) == 0
    table = (out / "TABLE.md").read_text()
    assert "| sMNIST | QLAM | 93.00 ± 1.00 | 92.6 | 65,034 | 1.0 min | 1 | 3 | 3 |" in table
    assert "| sMNIST | Transformer* |" in table and "| sMNIST | GRU* |" in table
    # one footnote for the two rows trained on the same subset
    assert table.count("trained on 1000 examples") == 1
    assert "\\* sMNIST Transformer; sMNIST GRU: trained on 1000 examples" in table
    assert "official one for the image datasets" in table
    assert "| sFashion-MNIST | SSM (S4D) | 80.00 ± – | 79.6 |" in table
    assert "| sFashion-MNIST | GRU | 85.00 ± – |  | 1,000 | 1.0 min | 1 | 2.75† | 1 |" in table
    assert "† the time budget" in table and table.count("†") == 2
    said = capsys.readouterr()
    assert "93.00 ± 1.00" in said.out
    with open(out / "table.csv") as f:
        recs = list(csv.DictReader(f))
    assert recs[0]["model"] == "qlam" and float(recs[0]["test_acc_mean"]) == pytest.approx(93.0)
    assert recs[0]["seeds"] == "0 1 2" and recs[1]["test_acc_std"] == ""
    assert [r["time_capped"] for r in recs] == ["0", "0", "0", "0", "1"]
    check_plot(out / "accuracy.png", said.err)

    assert main(["report", str(tmp_path / "report")]) == 1  # nothing finished there


def test_report_keeps_one_row_per_training_length(tmp_path):
    """Runs of one task at two lengths are two rows, each labelled with its length; a task
    run at one length keeps its plain name (the image tables do not change)."""
    runs = tmp_path / "runs"
    fake_summary(runs / "c1000" / "qlam", task="copying", acc=0.44, fields={"length": 1000})
    fake_summary(runs / "c2000" / "qlam", task="copying", acc=0.20, fields={"length": 2000})
    fake_summary(runs / "c1000" / "ssm", task="copying", model="ssm", acc=0.68,
                 fields={"length": 1000})
    # an image task's runs stay one row whether or not their summaries record the length
    fake_summary(runs / "smnist" / "qlam" / "seed0", acc=0.98, fields={"length": 784})
    fake_summary(runs / "smnist" / "qlam" / "seed1", seed=1, acc=0.96)
    rows = report.aggregate(report.collect([runs], log=None))
    assert [(r["task"], r["length"], r["model"], r["test_acc_mean"]) for r in rows] == [
        ("smnist", None, "qlam", pytest.approx(97.0)),
        ("copying", 1000, "qlam", pytest.approx(44.0)), ("copying", 1000, "ssm", pytest.approx(68.0)),
        ("copying", 2000, "qlam", pytest.approx(20.0))]
    assert not any(r["duplicates"] for r in rows)  # the seed-0 runs do not shadow each other
    table = report.markdown(rows)
    assert "| sMNIST | QLAM | 97.00 ± 1.41 |" in table
    assert "| Copying memory, L = 1,000 | QLAM | 44.00 ± – |" in table
    assert "| Copying memory, L = 2,000 | QLAM | 20.00 ± – |" in table
    assert "| Copying memory, L = 1,000 | SSM (S4D) | 68.00 ± – |" in table
    recs = list(csv.DictReader(io.StringIO(report.table_csv(rows))))
    assert [r["length"] for r in recs] == ["", "1000", "1000", "2000"]


def test_summaries_of_the_wrong_shape_are_skipped_by_name(tmp_path, capsys):
    """A summary.json with fields of the wrong type is skipped with its path and field named
    (they had crashed report, and with it every sweep that rewrites the report), and a run
    whose summary cannot be read is not finished: the sweep resumes it."""
    from qlam.rundirs import run_status

    runs = tmp_path / "runs"
    fake_summary(runs / "good", acc=0.9)
    for name, fields in (("cfg", {"config": [1]}), ("task", {"task": 5}),
                         ("acc", {"test_acc": None}), ("lengths", {"test_lengths": [1]})):
        fake_summary(runs / name, fields=fields)
    rows = report.aggregate(report.collect([runs], log=sys.stderr))
    assert [r["runs"] for r in rows] == [1]
    err = capsys.readouterr().err
    for name, field in (("cfg", "config"), ("task", "task"), ("acc", "test_acc"),
                        ("lengths", "test_lengths")):
        assert f"skipping {runs / name / 'summary.json'}: not a qlam run summary ({field} is" in err
    assert run_status(runs / "good") == "done" and run_status(runs / "cfg") == "new"
    (runs / "cfg" / "checkpoint.pt").write_bytes(b"x")
    assert run_status(runs / "cfg") == "resume"


def test_report_keeps_one_row_per_vocabulary(tmp_path):
    """MQAR over 40 tokens and over 20 are two tasks (chance 1/40 against 1/20): two rows and
    two length tables, each with its own chance level; a --vocab equal to the task's default
    is the default task."""
    runs = tmp_path / "runs"
    lengths = {"test_lengths": {"32": {"test_acc": 0.1}}, "length": 16}
    fake_summary(runs / "v40", task="mqar", acc=0.2, vocab=40,
                 fields={"chance": 1 / 40, **lengths})
    fake_summary(runs / "v20", task="mqar", acc=0.5, vocab=20,
                 fields={"chance": 1 / 20, **lengths})
    fake_summary(runs / "default", task="mqar", acc=0.3, vocab=8192)
    fake_summary(runs / "default1", task="mqar", seed=1, acc=0.4)
    summaries = report.collect([runs], log=None)
    rows = report.aggregate(summaries)
    assert [(r["task"], r["runs"], r["test_acc_mean"]) for r in rows] == [
        ("mqar", 2, pytest.approx(35.0)), ("mqar-vocab20", 1, pytest.approx(50.0)),
        ("mqar-vocab40", 1, pytest.approx(20.0))]
    assert not any(r["duplicates"] for r in rows)  # the seed-0 runs do not shadow each other
    table = report.markdown(rows)
    assert "| MQAR | QLAM | 35.00 ± 7.07 |" in table
    assert "| MQAR, vocab 20 | QLAM | 50.00 ± – |" in table
    curves = report.length_curves(summaries)
    assert set(curves) == {"mqar-vocab20", "mqar-vocab40"}
    text = report.length_markdown(curves, {"mqar-vocab20": 1 / 20, "mqar-vocab40": 1 / 40})
    assert "### MQAR, vocab 20: test accuracy (%) by sequence length (chance 5 %)" in text
    assert "### MQAR, vocab 40: test accuracy (%) by sequence length (chance 2.5 %)" in text


def test_length_curves_count_the_main_tables_runs_per_training_length(tmp_path):
    """The curves had counted an older rerun of a seed (the table keeps the newest only) and
    put runs trained at another length in the same row, so that a model trained at L = 64
    seemed to reach the L = 128 run's own 99 % at L = 128."""
    def run(where, seed, acc, length, at_256, age):
        s = fake_summary(tmp_path / where, task="s5", seed=seed, acc=acc,
                         fields={"length": length, "test_lengths": {"256": {"test_acc": at_256}}})
        os.utime(tmp_path / where / "summary.json", (1e9 - age, 1e9 - age))
        return s

    run("old/seed0", 0, 0.50, 64, 0.10, age=100)  # the rerun below replaces it
    run("new/seed0", 0, 0.90, 64, 0.80, age=0)
    run("new/seed1", 1, 0.92, 64, 0.82, age=0)
    run("L128/seed0", 0, 0.99, 128, 0.99, age=0)
    summaries = report.collect([tmp_path], log=None)
    curves = report.length_curves(summaries)["s5"]
    assert curves == {"QLAM, trained at L = 64": {64: [90.0, 92.0], 256: [80.0, 82.0]},
                      "QLAM, trained at L = 128": {128: [99.0], 256: [99.0]}}
    rows = report.aggregate(summaries)  # the main table: the same runs
    assert [(r["length"], r["test_acc_mean"]) for r in rows] == [(64, pytest.approx(91.0)),
                                                                 (128, pytest.approx(99.0))]


def test_report_marks_a_row_whose_runs_differ_in_settings(tmp_path):
    """Runs at another learning rate had been pooled into one mean ± std without a word."""
    fake_summary(tmp_path / "a0", seed=0, acc=0.96, lr=1e-3, epochs=9, threads=1)
    fake_summary(tmp_path / "a1", seed=1, acc=0.95, lr=1e-3, epochs=9, threads=2)  # (control)
    fake_summary(tmp_path / "b2", seed=2, acc=0.60, lr=0.1, epochs=1, threads=1)
    rows = report.aggregate(report.collect([tmp_path], log=None))
    assert rows[0]["mixed_settings"] == ["epochs", "lr"]
    table = report.markdown(rows)
    assert "| sMNIST | QLAM§ |" in table
    assert "§ sMNIST QLAM: its runs differ in epochs, lr (give each setting a --label" in table
    same = report.aggregate(report.collect([tmp_path / "a0", tmp_path / "a1"], log=None))
    assert same[0]["mixed_settings"] == [] and "§" not in report.markdown(same)


def test_a_finished_run_with_other_settings_is_named_when_skipped(tmp_path):
    """A sweep rerun with new settings into the same root had kept the old run as 'finished'
    without a word, so the table showed the old settings' result for the new ones."""
    fake_summary(S.run_dir(tmp_path, "smnist", "gru", 0), model="gru", lr=1e-3, d_model=32)
    log = io.StringIO()
    S.sweep(tmp_path, ["gru"], ["smnist"], [0], {"lr": 0.1, "d_model": 32}, log=log, plot=False)
    assert ("finished, skipped (with other settings: lr 0.001 there, 0.1 here; use another "
            "--root to run these)") in log.getvalue()
    log = io.StringIO()
    S.sweep(tmp_path, ["gru"], ["smnist"], [0], {"lr": 1e-3, "d_model": 32}, log=log, plot=False)
    assert "finished, skipped\n" in log.getvalue()


def test_a_regression_row_shows_its_mse(tmp_path):
    """The adding task's rows had shown only the tolerance accuracy, never the MSE that
    objectives.py calls the figure to quote."""
    for seed, mse in ((0, 0.01), (1, 0.03)):
        fake_summary(tmp_path / f"s{seed}", task="adding", model="lstm", seed=seed, acc=0.2,
                     fields={"target": "regression", "test_loss": mse})
    fake_summary(tmp_path / "cls", fields={"target": "class", "test_loss": 0.3})
    rows = {r["task"]: r for r in report.aggregate(report.collect([tmp_path], log=None))}
    assert rows["adding"]["test_mse_mean"] == pytest.approx(0.02)
    assert rows["adding"]["test_mse_std"] == pytest.approx(0.01414, rel=1e-3)
    assert math.isnan(rows["smnist"]["test_mse_mean"])
    table = report.markdown(list(rows.values()))
    assert "| Adding | LSTM | 20.00 ± 0.00 (MSE 0.02 ± 0.014) |" in table
    assert "| sMNIST | QLAM | 90.00 ± – |" in table
    recs = {r["task"]: r for r in csv.DictReader(io.StringIO(report.table_csv(list(rows.values()))))}
    assert float(recs["adding"]["test_mse_mean"]) == pytest.approx(0.02)
    assert recs["smnist"]["test_mse_mean"] == ""


def test_a_task_file_under_two_spellings_is_one_row(tmp_path):
    """The same file given as an absolute and a relative path had made two rows."""
    data = tmp_path / "data" / "x.npz"
    fake_summary(tmp_path / "r0", task=str(data), seed=0, acc=0.8)
    fake_summary(tmp_path / "r1", task=os.path.relpath(data), seed=1, acc=0.6)
    rows = report.aggregate(report.collect([tmp_path], log=None))
    assert [(r["runs"], r["test_acc_mean"]) for r in rows] == [(2, pytest.approx(70.0))]


def test_report_on_a_summary_file_and_bad_numbers(tmp_path, capsys):
    """`qlam report DIR/summary.json` had failed (the file taken for the output folder); a
    NaN accuracy had made a row of 'nan'."""
    fake_summary(tmp_path / "run")
    assert main(["report", str(tmp_path / "run" / "summary.json"), "--no-plot"]) == 0
    assert (tmp_path / "run" / "TABLE.md").is_file()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "summary.json").write_text(
        '{"task": "smnist", "model": "qlam", "test_acc": NaN}')
    rows = report.aggregate(report.collect([tmp_path], log=None))
    assert [r["runs"] for r in rows] == [1]


def test_real_tiny_sweep(use_task, tmp_path, monkeypatch, capsys):
    """Two seeds of a small GRU through the real training loop (a synthetic task), then
    the dry run sees both finished."""
    g = torch.Generator().manual_seed(0)

    def split(n):
        y = torch.arange(n) % 2
        return Split(torch.randn(n, 6, 1, generator=g) + y[:, None, None], y)

    task = Task(name="smnist", dataset="fake", seq_len=6, n_features=1, n_classes=2,
                train=split(16), val=split(6), test=split(6))
    use_task(lambda cfg: task)
    torch.set_num_threads(1)
    root = tmp_path / "res"
    argv = ["sweep", "--models", "gru", "--tasks", "smnist", "--seeds", "0-1", "--root", str(root),
            "--epochs", "1", "--batch-size", "8", "--params", "300", "--n-layers", "1",
            "--threads", "1", "--no-plot"]
    assert main(argv) == 0
    for seed in (0, 1):
        s = json.loads((S.run_dir(root, "smnist", "gru", seed) / "summary.json").read_text())
        assert s["seed"] == seed and abs(s["params"] - 300) < 60 and s["d_model"] is not None
    assert "| sMNIST | GRU |" in (root / "TABLE.md").read_text()
    capsys.readouterr()
    assert main(argv + ["--dry-run"]) == 0
    assert capsys.readouterr().out.count("done") == 2


def test_task_files_named_alike_may_not_share_a_run_folder(tmp_path):
    """a/data.npz and b/data.npz both went to ROOT/data: b failed on a's checkpoint, and a
    rerun reported b 'finished, skipped' with a's summary in its place."""
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        np.savez(tmp_path / d / "data.npz", x=np.zeros((40, 3, 1)), y=np.zeros(40, dtype=int))
    a, b = str(tmp_path / "a" / "data.npz"), str(tmp_path / "b" / "data.npz")
    root = tmp_path / "grid"
    with pytest.raises(ValueError, match=r"tasks .*a/data.npz and .*b/data.npz would share the "
                                         r"run folder .*grid/data"):
        S.plan(root, ["gru"], [a, b], [0], {})
    finished = S.run_dir(root, a, "gru", 0)  # a's run, finished by an earlier sweep
    finished.mkdir(parents=True)
    (finished / "summary.json").write_text(json.dumps({"task": a, "model": "gru",
                                                       "test_acc": 0.5}))
    assert S.plan(root, ["gru"], [a], [0], {})[0][1] == "done"
    relative = os.path.relpath(a)  # the same file written another way
    assert S.plan(root, ["gru"], [relative], [0], {})[0][1] == "done"
    with pytest.raises(ValueError, match=r"holds a finished run of .*a/data.npz, not of "
                                         r".*b/data.npz"):
        S.plan(root, ["gru"], [b], [0], {})
