"""`qlam export`, `qlam robustness` and `qlam eval` on every kind of task a checkpoint may
come from: token-id inputs (``discrete``), per-token targets, regression; each command reads
the test split the run reported on and refuses a task that does not fit the checkpoint.

Tiny real trainings of the generated tasks (a few seconds in all)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from qlam.cli import main
from qlam.data.recall import IGNORE_INDEX
from qlam.evaluate import checkpoint_task, load_model
from qlam.store import load_checkpoint

TINY = ["--model", "qlam", "--epochs", "1", "--batch-size", "8", "--limit-train", "16",
        "--limit-test", "6", "--d-model", "8", "--n-layers", "1", "--n-heads", "2",
        "--n-qubits", "2", "--device", "cpu", "--threads", "1"]
RUNS = {"mqar": ["--task", "mqar", "--length", "16", "--vocab", "40"],  # ids; sparse targets
        "s3-running": ["--task", "s3-running", "--length", "8"],  # ids; every token a target
        "parity": ["--task", "parity", "--length", "8"],  # ids; one label per sequence
        "adding": ["--task", "adding", "--length", "8"],  # features; regression
        "mixed": ["--task", "parity-running", "--length", "8", "--memory", "mixed"]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for name, args in RUNS.items():
        assert main(["train", *args, *TINY, "--out", str(root / name)]) == 0
    return root


def _model_says(path, index: int):
    """The model's own output on test example ``index`` of its run's test split, computed
    here by a plain forward of the split's batch (not through the export code)."""
    model, ck = load_model(path)
    _, task = checkpoint_task(ck)
    with torch.no_grad():
        out = model(task.test.x[index:index + 1])[0]
    return out, task.test.y[index], task


@pytest.mark.parametrize("name", list(RUNS))
def test_export_records_the_label_and_prediction_of_any_target(runs, tmp_path, name, capsys):
    path = runs / name / "model.pt"
    qasm = tmp_path / "c.qasm"
    tokens = 5
    assert main(["export", "--checkpoint", str(path), "--index", "3", "--tokens",
                 str(tokens), "--out", str(qasm)]) == 0
    md = json.loads(qasm.with_suffix(".json").read_text())["metadata"]
    out, y, task = _model_says(path, 3)
    assert md["target"] == task.target and md["tokens"] == tokens
    assert qasm.read_text().startswith("OPENQASM 2.0;")
    if task.target == "regression":
        assert md["label"] == pytest.approx(float(y)) and isinstance(md["label"], float)
        assert md["prediction"] == pytest.approx(float(out[0]), abs=1e-6)
    elif task.target == "class":
        assert (md["label"], md["prediction"]) == (int(y), int(out.argmax()))
    else:  # per token: at the last exported token, and the whole sequences
        labels = [None if v == IGNORE_INDEX else v for v in y.tolist()]
        assert md["labels"] == labels and md["predictions"] == out.argmax(-1).tolist()
        assert (md["label"], md["prediction"]) == (labels[tokens - 1],
                                                  md["predictions"][tokens - 1])
        assert f"at token {tokens - 1}: label {md['label']}" in capsys.readouterr().out
    if name == "mqar":
        assert None in md["labels"]  # MQAR's non-query positions are no targets


def test_the_commands_read_the_runs_own_test_split(runs, tmp_path):
    """A generated task's test set depends on how many examples are generated (MQAR's
    does): export, robustness and eval all use the run's (``--limit-test 6``), ``--limit``
    its first examples."""
    path = runs / "mqar" / "model.pt"
    ck = load_checkpoint(path)
    assert ck["config"]["limit_test"] == 6
    _, task = checkpoint_task(ck)
    assert len(task.test) == 6 and len(task.train) == 0  # the test split alone is generated
    from qlam.data.tasks import get_task

    other = get_task("mqar", length=16, vocab=40, limit_test=4, splits=("test",)).test
    assert not torch.equal(other.x, task.test.x[:4])  # why the run's own size matters
    qasm = tmp_path / "c.qasm"
    assert main(["export", "--checkpoint", str(path), "--index", "2", "--out", str(qasm)]) == 0
    md = json.loads(qasm.with_suffix(".json").read_text())["metadata"]
    assert md["labels"] == [None if v == IGNORE_INDEX else v for v in task.test.y[2].tolist()]
    assert main(["export", "--checkpoint", str(path), "--index", "6", "--out", str(qasm)]) == 2
    out = tmp_path / "rob"
    assert main(["robustness", "--checkpoint", str(path), "--shots", "", "--noise",
                 "--limit", "4", "--device", "cpu", "--no-plot", "--out", str(out)]) == 0
    rob = json.loads((out / "robustness.json").read_text())
    res = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(path), "--limit", "4", "--device", "cpu",
                 "--json", str(res)]) == 0
    assert rob["rows"][0]["test_acc"] == json.loads(res.read_text())["test_acc"]
    assert rob["n_test"] == 4


def test_a_task_that_does_not_fit_is_refused_by_every_command(runs, tmp_path, capsys):
    s3 = str(runs / "s3-running" / "model.pt")  # 6 token ids, 6 outputs
    for cmd in (["eval", "--checkpoint", s3, "--task", "parity-running", "--device", "cpu"],
                ["robustness", "--checkpoint", s3, "--task", "parity-running", "--shots", "",
                 "--noise", "--device", "cpu", "--no-plot", "--out", str(tmp_path / "r")],
                ["export", "--checkpoint", s3, "--task", "parity-running", "--index", "0",
                 "--out", str(tmp_path / "c.qasm")]):
        assert main(cmd) == 2, cmd
        assert "does not fit this checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "r" / "robustness.json").exists()
    # features where the model reads token ids: same sizes and target kind as parity's
    rng = np.random.default_rng(0)
    npz = tmp_path / "float2.npz"
    np.savez(npz, x=rng.standard_normal((40, 8, 2)).astype("f4"), y=rng.integers(0, 2, 40))
    assert main(["eval", "--checkpoint", str(runs / "parity" / "model.pt"), "--task",
                 str(npz), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "does not fit" in err and "token ids < 2" in err and "2 features" in err


def test_robustness_of_a_mixed_memory_sweeps_shots_only(runs, tmp_path, capsys):
    """The mixed memory's state is a density matrix: the default sweep leaves noise out
    (it had failed on its first noisy row), and asking for noise is refused up front."""
    path = str(runs / "mixed" / "model.pt")
    out = tmp_path / "rob"
    assert main(["robustness", "--checkpoint", path, "--shots", "10", "--limit", "4",
                 "--device", "cpu", "--no-plot", "--out", str(out)]) == 0
    assert "no noise sweep" in capsys.readouterr().err
    rows = json.loads((out / "robustness.json").read_text())["rows"]
    assert [r["kind"] for r in rows] == ["exact", "shots"]
    assert main(["robustness", "--checkpoint", path, "--noise", "bitflip:0.1", "--limit", "4",
                 "--device", "cpu", "--no-plot", "--out", str(tmp_path / "r2")]) == 2
    assert "memory is mixed" in capsys.readouterr().err
    assert not (tmp_path / "r2" / "robustness.json").exists()

