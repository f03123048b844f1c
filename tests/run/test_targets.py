"""Target kinds end to end: per-token and regression outputs of every model, the loss and
accuracy per kind (accuracy only over target positions), training on generated tasks,
test lengths in summary.json, `qlam eval --length`, the length plot, and CLI errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from qlam.cli import main
from qlam.data import generated, get_task
from qlam.data.recall import IGNORE_INDEX
from qlam.data.tasks import Split, Task
from qlam.models import REGISTRY, build_model
from qlam.objectives import batch_stats
from qlam.train import TrainConfig, eval_checkpoint, evaluate, resolved_model_options, train

SMALL = dict(d_model=8, n_layers=1, n_heads=2, n_qubits=2, depth=1, d_state=4)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_model_gives_per_token_and_regression_outputs(name):
    torch.manual_seed(0)
    x = torch.randint(0, 5, (3, 7))
    model = build_model(name, 5, 4, pool="none", discrete=True, causal=True, **SMALL).eval()
    out = model(x)
    assert out.shape == (3, 7, 4)
    # causal: changing the last tokens leaves the earlier outputs alone
    x2 = x.clone()
    x2[:, 4:] = (x2[:, 4:] + 1) % 5
    assert torch.allclose(model(x2)[:, :4], out[:, :4], atol=1e-5)
    assert not torch.allclose(model(x2)[:, 4:], out[:, 4:], atol=1e-5)
    reg = build_model(name, 2, 1, pool="last", **SMALL)
    assert reg(torch.randn(3, 7, 2)).shape == (3, 1)
    with pytest.raises(ValueError, match="token ids"):
        model(torch.randn(3, 7, 5))
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 5\)"):
        model(torch.full((2, 3), 5))


def test_transformer_is_bidirectional_unless_causal():
    torch.manual_seed(0)
    x = torch.randint(0, 5, (2, 6))
    model = build_model("transformer", 5, 3, pool="none", discrete=True, **SMALL).eval()
    x2 = x.clone()
    x2[:, -1] = (x2[:, -1] + 1) % 5
    assert not torch.allclose(model(x2)[:, 0], model(x)[:, 0], atol=1e-5)


def test_embedding_of_ids_equals_linear_of_one_hot():
    """Token ids and their one-hot features give the same model, up to the first layer."""
    torch.manual_seed(0)
    ids_model = build_model("gru", 6, 2, discrete=True, **SMALL)
    hot_model = build_model("gru", 6, 2, **SMALL)
    state = ids_model.state_dict()
    state["embed.weight"] = ids_model.embed.weight.t().detach()
    state["embed.bias"] = torch.zeros(SMALL["d_model"])
    hot_model.load_state_dict(state)
    x = torch.randint(0, 6, (4, 5))
    assert torch.allclose(ids_model(x), hot_model(nn.functional.one_hot(x, 6).float()), atol=1e-6)


def test_token_accuracy_counts_only_target_positions():
    y = torch.full((2, 5), IGNORE_INDEX)
    y[0, 3], y[1, 4], y[1, 0] = 1, 2, 0
    right = torch.full((2, 5, 3), -5.0)
    right[0, 3, 1] = right[1, 4, 2] = right[1, 0, 0] = 5.0  # wrong (class 0) everywhere else
    right[..., 0] += 0.1 * (y == IGNORE_INDEX)
    loss, correct, count = batch_stats(right, y, "tokens")
    assert (correct, count) == (3, 3)
    assert loss.item() == pytest.approx(torch.nn.functional.cross_entropy(
        torch.tensor([[-5.0, 5.0, -5.0], [5.0, -5.0, -5.0], [-5.0, -5.0, 5.0]]),
        torch.tensor([1, 0, 2])).item())
    wrong = right.clone()
    wrong[1, 4] = torch.tensor([5.0, -5.0, -5.0])
    assert batch_stats(wrong, y, "tokens")[1:] == (2, 3)
    with pytest.raises(ValueError, match="pool 'none'"):
        batch_stats(torch.zeros(2, 3), y, "tokens")


class Constant(nn.Module):
    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def forward(self, x):
        return torch.full((x.shape[0], 1), self.value)


def test_adding_metric_of_the_best_constant_is_the_stated_chance():
    """Predicting 1.0: MSE = Var(U1 + U2) = 1/6; P(|U1 + U2 - 1| < 0.04) = 0.0784."""
    task = get_task("adding", length=20, limit_train=1, limit_test=20_000)
    mse, acc = evaluate(Constant(1.0), task, "test", 5000, "cpu")
    assert mse == pytest.approx(1 / 6, rel=0.03)
    assert acc == pytest.approx(task.chance, abs=0.006)


def _cfg(tmp_path, name, **kw):
    base = dict(task=name, out=str(tmp_path / name), epochs=1, batch_size=16, lr=1e-2,
                limit_train=64, limit_test=16, eval_batch_size=64, model="gru", **SMALL)
    base.update(kw)
    return TrainConfig(**base)


def test_parity_running_is_learned_in_seconds(tmp_path):
    cfg = _cfg(tmp_path, "parity-running", length=8, epochs=6, limit_train=512, limit_test=128,
               batch_size=32, lr=2e-2, d_model=16)
    summary = train(cfg)
    losses = [json.loads(line)["train_loss"]
              for line in (tmp_path / "parity-running" / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < 0.3 * losses[0]
    assert summary["test_acc"] > 0.9 and summary["target"] == "tokens"


@pytest.mark.parametrize("name,length,model", [
    ("parity", 8, "qlam"), ("s5", 6, "lstm"), ("a5-running", 6, "ssm"), ("adding", 12, "rnn"),
    ("copying", 25, "transformer"), ("selective-copying", 40, "qlstm"), ("mqar", 64, "gru"),
    ("listops", 24, "gru"),
])
def test_train_on_each_kind_and_evaluate_at_other_lengths(tmp_path, name, length, model):
    test_length = 2 * length
    vocab = 12 if name in ("copying", "selective-copying") else None
    cfg = _cfg(tmp_path, name, length=length, test_lengths=str(test_length), model=model,
               vocab=vocab, causal=True if model == "transformer" else None)
    summary = train(cfg)
    saved = json.loads((tmp_path / name / "summary.json").read_text())
    task = get_task(name, length=length, limit_train=1, vocab=vocab)
    assert saved["chance"] == pytest.approx(task.chance) and saved["length"] == length
    assert saved["target"] == task.target
    at = saved["test_lengths"][str(test_length)]
    assert at["n_test"] == 16 and 0.0 <= at["test_acc"] <= 1.0
    # qlam eval --length reproduces the per-length figure (same fixed test set)
    res = eval_checkpoint(tmp_path / name / "model.pt", device="cpu", length=test_length,
                          limit=16)
    assert res["length"] == test_length
    assert res["test_acc"] == pytest.approx(at["test_acc"])
    assert res["test_loss"] == pytest.approx(at["test_loss"], rel=1e-4)
    assert summary["test_acc"] == saved["test_acc"]


def test_pool_must_fit_the_target():
    with pytest.raises(ValueError, match="must be 'none'"):
        resolved_model_options(TrainConfig(task="copying", pool="mean"), 10, 10, "tokens", True)
    with pytest.raises(ValueError, match="does not apply"):
        resolved_model_options(TrainConfig(task="parity", pool="none"), 2, 2, "class", True)
    opts = resolved_model_options(TrainConfig(task="copying"), 10, 10, "tokens", True)
    assert opts["pool"] == "none" and opts["discrete"] is True


def test_cli_trains_reports_and_evaluates_at_a_new_length(tmp_path, capsys):
    run = tmp_path / "runs" / "parity" / "lstm" / "seed0"
    assert main(["train", "--task", "parity", "--length", "8", "--test-lengths", "16,32",
                 "--model", "lstm", "--d-model", "8", "--n-layers", "1", "--epochs", "1",
                 "--limit-train", "32", "--limit-test", "8", "--out", str(run)]) == 0
    assert main(["eval", "--checkpoint", str(run / "model.pt"), "--length", "64",
                 "--limit", "8", "--device", "cpu"]) == 0
    assert "on 8 examples of length 64" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "runs"), "--no-plot"]) == 0
    table = (tmp_path / "runs" / "TABLE.md").read_text()
    assert "Length generalisation" in table and "L = 32" in table
    assert main(["data", "tasks"]) == 0
    assert "s5-running" in capsys.readouterr().out


@pytest.mark.parametrize("argv,match", [
    (["--task", "parity", "--length", "0"], "length must be in"),
    (["--task", "copying", "--length", "12"], "length must be >= 21"),
    (["--task", "parity", "--test-lengths", "8,x"], "bad test length"),
    (["--task", "parity", "--vocab", "4"], "fixed vocabulary"),
    (["--task", "parity-running", "--pool", "mean"], "must be 'none'"),
    (["--task", "smnist", "--length", "100"], "applies to the generated tasks"),
])
def test_cli_errors_are_named(tmp_path, capsys, argv, match):
    code = main(["train", *argv, "--out", str(tmp_path / "r"), "--limit-train", "8",
                 "--epochs", "1", "--d-model", "8", "--n-layers", "1"])
    assert code == 2
    assert match in capsys.readouterr().err


def test_eval_length_errors(tmp_path, capsys):
    run = tmp_path / "r"
    train(_cfg(tmp_path, "parity", out=str(run), length=8, model="lstm"))
    assert main(["eval", "--checkpoint", str(run / "model.pt"), "--length", "0"]) == 2
    assert "length must be in" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(run / "model.pt"), "--task", "s5",
                 "--length", "8"]) == 2
    assert "does not fit this checkpoint" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(run / "model.pt"), "--threads", "0"]) == 2
    assert "--threads must be >= 1, got 0" in capsys.readouterr().err


def test_eval_runs_on_the_threads_given(tmp_path, capsys, monkeypatch):
    run = tmp_path / "r"
    train(_cfg(tmp_path, "parity", out=str(run), length=8, model="lstm"))
    seen = []
    monkeypatch.setattr(torch, "set_num_threads", seen.append)
    assert main(["eval", "--checkpoint", str(run / "model.pt"), "--threads", "3"]) == 0
    assert seen == [3] and "test accuracy" in capsys.readouterr().out


def test_length_plot_and_table_from_fake_summaries(tmp_path):
    from qlam.report import length_curves, length_markdown, write_report

    for model, accs in (("qlam", [1.0, 0.99, 0.97]), ("ssm", [1.0, 0.6, 0.5])):
        for seed in (0, 1):
            d = tmp_path / "s5" / model / f"seed{seed}"
            d.mkdir(parents=True)
            s = {"task": "s5", "model": model, "seed": seed, "test_acc": accs[0] - 0.01 * seed,
                 "length": 64, "chance": 1 / 120, "params": 1000, "wall_s": 1.0,
                 "test_lengths": {"256": {"test_acc": accs[1]}, "1024": {"test_acc": accs[2]}}}
            (d / "summary.json").write_text(json.dumps(s))
    curves = length_curves([json.loads(p.read_text()) for p in tmp_path.rglob("summary.json")])
    assert sorted(curves["s5"]["qlam"][64]) == pytest.approx([99.0, 100.0])
    assert curves["s5"]["ssm"][1024] == pytest.approx([50.0, 50.0])
    text = length_markdown(curves, {"s5": 1 / 120})
    assert "| QLAM | 99.5 ± 0.7 | 99.0 ± 0.0 | 97.0 ± 0.0 |" in text
    assert "chance 0.833 %" in text
    pytest.importorskip("matplotlib")
    write_report([tmp_path], tmp_path)
    png = tmp_path / "length_s5.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_split_objects_and_old_tasks_still_class():
    task = Task(name="t", dataset="t", seq_len=3, n_features=1, n_classes=2,
                train=Split(torch.zeros(4, 3, 1), torch.zeros(4, dtype=torch.long)),
                val=Split(torch.zeros(2, 3, 1), torch.zeros(2, dtype=torch.long)),
                test=Split(torch.zeros(2, 3, 1), torch.zeros(2, dtype=torch.long)))
    assert task.target == "class" and task.split(task.val) is task.val
    with pytest.raises(ValueError, match="fixed length"):
        task.test_at(10)


@pytest.mark.parametrize("name,best,acc2", [("adding", 2, 0.1), ("parity", 1, 0.1),
                                             ("parity", 1, 0.2)])  # a tie keeps the first
def test_best_epoch_is_lowest_mse_for_regression_highest_accuracy_otherwise(
        tmp_path, monkeypatch, name, best, acc2):
    import qlam.train as train_mod

    real = train_mod.evaluate
    scripted = iter([(0.5, 0.2), (0.1, acc2)])  # (val loss, val acc) of epochs 1 and 2

    def fake(model, task, split, *args, **kwargs):
        return next(scripted) if split == "val" else real(model, task, split, *args, **kwargs)

    monkeypatch.setattr(train_mod, "evaluate", fake)
    summary = train(_cfg(tmp_path, name, length=8, epochs=2, model="rnn"))
    assert summary["best_epoch"] == best
    assert summary["val_acc"] == (acc2 if best == 2 else 0.2)


def test_per_length_test_sets_without_a_limit_hold_the_documented_size(tmp_path):
    """No --limit-test: each extra test length is evaluated on the task's full test size."""
    cfg = _cfg(tmp_path, "parity", length=6, test_lengths="12", limit_test=None, limit_train=32)
    summary = train(cfg)
    assert summary["test_lengths"]["12"]["n_test"] == generated.SPECS["parity"].sizes[2]
    acc = summary["test_lengths"]["12"]["test_acc"]
    assert f"test length 12: accuracy {acc:.4f}" in (tmp_path / "parity" / "train.log").read_text()


def test_export_a_head_of_a_token_id_model():
    """A QLAM head of a token-id model exports for an example of ids: the circuit's state
    is the one the model's memory reaches (read through its probabilities)."""
    import qlam
    from qlam.export import export_head

    torch.manual_seed(0)
    model = build_model("qlam", 7, 3, discrete=True, d_model=8, n_layers=1, n_heads=2,
                        n_qubits=2).eval()
    x = torch.tensor([3, 0, 6, 6, 1])
    ex = export_head(model, x, layer=0, head=1)
    torch.testing.assert_close(qlam.statevector(ex.circuit)[0], ex.state, atol=1e-10, rtol=0)
    mem = model.blocks[0].memory
    with torch.no_grad():
        h = model.blocks[0].norm1(model.embed(x[None]))
        probs, _ = mem.probabilities(h)
    np.testing.assert_allclose(probs[0, -1, 1].numpy(), ex.readout_probabilities.numpy(),
                               atol=2e-5)
    with pytest.raises(ValueError, match=r"\(length,\) token ids"):
        export_head(model, torch.zeros(5, 7), layer=0, head=0)


COMMITTED = Path(__file__).resolve().parents[2] / "results" / "long"


@pytest.mark.parametrize("run", ["state-fastdt/parity-running/qlam/seed1",
                                 "state/s3-running/gru/seed0"])
def test_committed_state_tracking_model_reproduces_its_figure_at_another_length(run):
    """A committed model evaluated at a length it was not trained on, by the same path as
    `qlam eval --checkpoint ... --length L`, gives the accuracy its summary.json recorded."""
    d = COMMITTED / run
    summary = json.loads((d / "summary.json").read_text())
    expected = summary["test_lengths"]["256"]
    result = eval_checkpoint(d / "model.pt", length=256, limit=expected["n_test"],
                             device="cpu")
    assert summary["length"] == 64 and result["test_acc"] == pytest.approx(
        expected["test_acc"], abs=1e-6)
