"""The CLI on a researcher's own data: `qlam train --task FILE.npz`, what a run leaves in its
directory, help text for every flag, and the rough edges (messages, hints, unused options,
seeds counted once in `qlam report`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from plots_check import check_plot

from qlam.cli import build_parser, main
from qlam.config import TrainConfig, config_from_dict, drop_unused_model_options
from qlam.data.tasks import npz_task as load_npz_task
from qlam.report import aggregate, collect, markdown

SMALL = ["--model", "qlam", "--epochs", "1", "--batch-size", "8", "--d-model", "8",
         "--n-layers", "1", "--n-heads", "2", "--n-qubits", "2", "--threads", "1"]


def _npz(path, n=40, length=6, features=2, **extra):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, length, features)).astype(np.float32)
    y = (x[:, :2, 0].sum(1) > 0).astype(np.int64)
    np.savez(path, x=x, y=y, **extra)
    return path


def test_npz_task_format_and_splits(tmp_path):
    rng = np.random.default_rng(1)
    path = _npz(tmp_path / "d.npz", x_test=rng.standard_normal((7, 6, 2)),
                y_test=np.array([0, 1, 2, 0, 1, 2, 0]))
    task = load_npz_task(path, val_fraction=0.25, seed=3, limit_train=20)
    assert (task.seq_len, task.n_features, task.n_classes) == (6, 2, 3)
    assert (len(task.train), len(task.val), len(task.test)) == (20, 10, 7)
    no_test = load_npz_task(_npz(tmp_path / "e.npz"), val_fraction=0.25, seed=0)
    other_seed = load_npz_task(tmp_path / "e.npz", val_fraction=0.25, seed=1)
    assert (len(no_test.train), len(no_test.val), len(no_test.test)) == (27, 9, 4)
    assert np.array_equal(no_test.test.x, other_seed.test.x)  # one test set for every seed
    assert not np.array_equal(no_test.val.x, other_seed.val.x)


@pytest.mark.parametrize("arrays,message", [
    (dict(x=np.zeros((4, 3))), "missing array 'y'"),
    (dict(x=np.zeros((4, 3)), y=np.zeros(4, dtype=int)), r"x must be a real float array \(N, L, F\)"),
    (dict(x=np.zeros((4, 3, 1)), y=np.zeros(4)), "y must be an integer array"),
    (dict(x=np.zeros((4, 3, 1)), y=np.zeros(5, dtype=int)), "4 examples and y 5"),
    (dict(x=np.full((4, 3, 1), np.nan), y=np.zeros(4, dtype=int)), "NaN or inf"),
    (dict(x=np.zeros((4, 3, 1)), y=-np.ones(4, dtype=int)), "negative labels"),
    (dict(x=np.zeros((4, 3, 1)), y=np.zeros(4, dtype=int), x_test=np.zeros((2, 3, 1))),
     "x_test and y_test must be given together"),
    (dict(x=np.zeros((4, 3, 1)), y=np.zeros(4, dtype=int), x_test=np.zeros((2, 5, 1)),
          y_test=np.zeros(2, dtype=int)), r"x_test has \(L, F\)"),
    (dict(x=np.zeros((4, 3, 1)), y=np.zeros(4, dtype=int), labels=np.zeros(4)), "unknown arrays"),
    (dict(x=np.array([[[None]]] * 4, dtype=object), y=np.zeros(4, dtype=int)), "pickle"),
    # found by the session-18 audit: each had been accepted
    (dict(x=np.zeros((40, 5, 0)), y=np.zeros(40, dtype=int)), r"with L, F >= 1, got float64 "
     r"\(40, 5, 0\)"),  # trained on no input, "test accuracy 0.5"
    (dict(x=np.zeros((40, 0, 2)), y=np.zeros(40, dtype=int)), "with L, F >= 1"),
    (dict(x=np.r_[np.zeros((39, 3, 1)), np.full((1, 3, 1), 1e300)], y=np.zeros(40, dtype=int)),
     r"x holds values beyond float32's range"),  # inf after the cast: "loss became nan"
    (dict(x=np.zeros((40, 3, 1)), y=np.r_[np.zeros(39), 2**63].astype(np.uint64)),
     r"y\[39\] = 9223372036854775808 is not a class label 0..C-1 with C <= 65536"),
    (dict(x=np.zeros((40, 3, 1)), y=np.r_[np.zeros(39), 10**9].astype(int)),
     r"y\[39\] = 1000000000 is not a class label"),  # a 32 GB head
    (dict(x=np.zeros((4, 3, 1)), y=np.zeros(4, dtype=int)),  # no test example held out
     r"4 examples are too few to hold out 10% as the test set .* or x_test, y_test"),
    (dict(x=np.zeros((4, 3, 1)), y=np.zeros(4, dtype=int), x_test=np.zeros((2, 3, 1)),
          y_test=np.zeros(2, dtype=int)), "4 examples are too few to hold out 10% as the val set"),
])
def test_npz_task_errors_name_the_problem(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=message):
        load_npz_task(tmp_path / "bad.npz")


@pytest.mark.parametrize("option,match", [
    (dict(tokenize="row"), "tokenize applies to the image tasks"),
    (dict(grayscale=True), "grayscale applies to the image tasks"),
    (dict(length=12), "length applies to the generated tasks"),
    (dict(test_lengths="64"), "test_lengths applies to the generated tasks"),
])
def test_npz_task_refuses_options_it_would_ignore(tmp_path, option, match):
    """They had been ignored, and recorded in config.json as if applied."""
    from qlam.data import get_task

    with pytest.raises(ValueError, match=match):
        get_task(str(_npz(tmp_path / "d.npz")), **option)


def test_npz_task_missing_or_corrupt_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="task file not found"):
        load_npz_task(tmp_path / "none.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable .npz"):
        load_npz_task(tmp_path / "junk.npz")


def test_train_eval_and_sweep_on_an_npz_file(tmp_path, capsys):
    data = str(_npz(tmp_path / "mine.npz"))
    run = tmp_path / "run"
    assert main(["train", "--task", data, *SMALL, "--out", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["task"] == data and summary["n_train"] == 32
    # the run directory holds what the README says: the log and the learning curve too
    for name in ("summary.json", "metrics.jsonl", "config.json", "model.pt", "train.log"):
        assert (run / name).is_file(), name
    log = (run / "train.log").read_text()
    assert '"epoch": 1' in log and "test accuracy" in log
    check_plot(run / "learning_curve.png", log)
    assert main(["eval", "--checkpoint", str(run / "model.pt"), "--device", "cpu"]) == 0
    assert f"{summary['test_acc']:.4f}" in capsys.readouterr().out
    root = tmp_path / "grid"
    assert main(["sweep", "--models", "qlam", "--tasks", data, "--seeds", "0", "--root",
                 str(root), "--no-plot", *SMALL[2:]]) == 0
    assert (root / "mine" / "qlam" / "seed0" / "summary.json").is_file()
    assert main(["train", "--task", str(tmp_path / "nope.npz"), *SMALL,
                 "--out", str(tmp_path / "r2")]) == 2
    assert "task file not found" in capsys.readouterr().err


def test_every_train_flag_has_help_text():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in ("train", "sweep", "eval"):
        for action in sub.choices[name]._actions:
            assert action.help and len(action.help) > 8, (name, action.dest)


def test_stop_after_steps_says_so(tmp_path, capsys):
    data = str(_npz(tmp_path / "mine.npz"))
    run = tmp_path / "run"
    code = main(["train", "--task", data, *SMALL, "--out", str(run), "--stop-after-steps", "2"])
    err = capsys.readouterr().err
    assert code == 3
    assert "stopped after 2 steps (--stop-after-steps)" in err and "--resume" in err


def test_config_key_hint():
    with pytest.raises(ValueError, match=r"batch-size \(did you mean batch_size\?\)"):
        config_from_dict({"batch-size": 32})
    with pytest.raises(ValueError, match=r"unknown config keys: wobble;"):
        config_from_dict({"wobble": 1})


def test_options_a_model_does_not_use_are_not_recorded():
    cfg = TrainConfig(model="lstm", n_qubits=3, d_model=8, n_heads=2)
    with pytest.warns(UserWarning, match=r"'lstm' does not use --n-heads, --n-qubits"):
        used = drop_unused_model_options(cfg)
    assert used.n_qubits is None and used.n_heads is None and used.d_model == 8
    assert drop_unused_model_options(TrainConfig(model="qlam", n_qubits=3)).n_qubits == 3


def test_report_counts_distinct_seeds(tmp_path):
    def write(d, seed, acc):
        d.mkdir(parents=True)
        (d / "summary.json").write_text(json.dumps(
            {"task": "smnist", "model": "qlam", "seed": seed, "test_acc": acc, "params": 10}))

    write(tmp_path / "a" / "seed0", 0, 0.5)
    write(tmp_path / "a" / "seed1", 1, 0.7)
    write(tmp_path / "b" / "seed0", 0, 0.9)  # the same seed again, newer
    rows = aggregate(collect([tmp_path], log=None))
    assert len(rows) == 1 and rows[0]["runs"] == 2
    assert rows[0]["test_acc_mean"] == pytest.approx(80.0)  # 0.9 (newest seed 0) and 0.7
    assert "runs of a seed already counted were left out" in markdown(rows)


def test_report_keeps_labelled_variants_of_a_model_apart(tmp_path):
    """Two variants of one model (``--label``) are two rows and two length curves."""
    from qlam.report import length_curves

    for label, acc in ((None, 0.6), ("qlam-fast", 0.9)):
        d = tmp_path / (label or "qlam") / "seed0"
        d.mkdir(parents=True)
        (d / "summary.json").write_text(json.dumps(
            {"task": "parity", "model": "qlam", "seed": 0, "test_acc": acc, "params": 10,
             "length": 64, "test_lengths": {"256": {"test_acc": acc / 2}},
             "config": {"label": label}}))
    summaries = collect([tmp_path], log=None)
    rows = {r["model"]: r["test_acc_mean"] for r in aggregate(summaries)}
    assert rows == pytest.approx({"qlam": 60.0, "qlam-fast": 90.0})
    curves = length_curves(summaries)["parity"]
    assert curves["qlam-fast"][256] == pytest.approx([45.0]) and curves["qlam"][64] == [60.0]
