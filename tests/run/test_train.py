"""Training loop: outputs, exact resume after preemption, eval, configs and bad files,
on a tiny synthetic task (no dataset download)."""

import json
import os
import signal

import pytest
import torch

import qlam.objectives as objectives
import qlam.train as train_mod
from qlam.cli import main
from qlam.data.tasks import Split, Task
from qlam.train import TrainConfig, eval_checkpoint, read_config_file, train


def synthetic_task(cfg=None) -> Task:
    """Label = whether the first 4 tokens sum above zero (the model must remember them)."""
    g = torch.Generator().manual_seed(0)

    def split(n):
        x = torch.randn(n, 16, 1, generator=g)
        y = (x[:, :4, 0].sum(1) > 0).long()
        return Split(x, y)

    return Task(name="synthetic", dataset="synthetic", seq_len=16, n_features=1, n_classes=2,
                train=split(96), val=split(32), test=split(48))


@pytest.fixture(autouse=True)
def _synthetic(use_task):
    use_task(synthetic_task)


def _cfg(tmp_path, **kw):
    base = dict(out=str(tmp_path / "run"), epochs=2, batch_size=16, lr=1e-2, d_model=8,
                n_layers=1, n_heads=2, n_qubits=2, eval_batch_size=64)
    base.update(kw)
    return TrainConfig(**base)


def test_train_writes_metrics_summary_and_model(tmp_path):
    summary = train(_cfg(tmp_path))
    run = tmp_path / "run"
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in recs] == [1, 2]
    saved = json.loads((run / "summary.json").read_text())
    for key in ("task", "model", "test_acc", "val_acc", "params", "epochs", "wall_s", "seed",
                "command", "config"):
        assert key in saved
    assert saved == json.loads(json.dumps(summary))
    assert 0.0 <= saved["test_acc"] <= 1.0 and saved["epochs"] == 2
    assert saved["steps_per_epoch"] == 6 and saved["steps"] == 12  # 96 examples, batches of 16
    assert saved["params"] == sum(p.numel() for p in torch.load(
        run / "model.pt", weights_only=False)["model"].values())
    # the best-on-validation model reproduces the reported test accuracy
    res = eval_checkpoint(run / "model.pt", device="cpu")
    assert res["test_acc"] == pytest.approx(saved["test_acc"])


def test_learns_the_synthetic_task(tmp_path):
    summary = train(_cfg(tmp_path, epochs=8, d_model=16, n_qubits=3, dt_min=0.05, dt_max=0.5))
    assert summary["val_acc"] >= 0.75


def test_resume_after_preemption_matches_uninterrupted_run(tmp_path):
    full = train(_cfg(tmp_path / "a"))
    cfg_b = _cfg(tmp_path / "b", stop_after_steps=3)
    stopped = train(cfg_b)
    assert stopped["stopped"] == "preempted"
    assert not (tmp_path / "b" / "run" / "summary.json").exists()
    # resume without the preemption point (a run-control setting)
    resumed = train(_cfg(tmp_path / "b"), resume=True)
    assert resumed["test_acc"] == full["test_acc"] and resumed["val_acc"] == full["val_acc"]
    a = torch.load(tmp_path / "a" / "run" / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "b" / "run" / "checkpoint.pt", weights_only=False)["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_checkpoints_and_resume_matches_uninterrupted_run(tmp_path, monkeypatch, signum):
    full = train(_cfg(tmp_path / "a"))
    calls = {"n": 0}
    loss_fn = objectives.F.cross_entropy

    def signalling_loss(*args, **kwargs):  # the signal arrives during the 3rd training step
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signum)
        return loss_fn(*args, **kwargs)

    monkeypatch.setattr(objectives.F, "cross_entropy", signalling_loss)
    stopped = train(_cfg(tmp_path / "b"))
    monkeypatch.setattr(objectives.F, "cross_entropy", loss_fn)
    assert stopped == {"stopped": "interrupted", "global_step": 3}
    assert not (tmp_path / "b" / "run" / "summary.json").exists()
    # the handlers are restored: the process reacts to signals as before
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    resumed = train(_cfg(tmp_path / "b"), resume=True)
    assert resumed["test_acc"] == full["test_acc"] and resumed["val_acc"] == full["val_acc"]


class _InfGrad(torch.autograd.Function):
    """Identity forward; the backward makes the gradient infinite (a finite loss whose
    backward overflows)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * float("inf")


@pytest.mark.parametrize("where", ["loss", "gradient"])
def test_non_finite_loss_or_gradient_stops_before_the_step(tmp_path, monkeypatch, where):
    """A NaN loss, or a finite loss whose gradient overflows, raises a clear error at step 0,
    and the weights keep their values (the optimizer step that would spread the NaN is not
    taken)."""
    built = []

    def build(name, n_features, n_classes, **kw):
        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16 * n_features, n_classes))
        built.append((net, [q.detach().clone() for q in net.parameters()]))

        class Wrapped(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.net = net

            def forward(self, x):
                out = self.net(x)
                if where == "loss":
                    return out * float("nan")
                return _InfGrad.apply(out)

        return Wrapped()

    monkeypatch.setattr(train_mod, "build_model", build)
    with pytest.raises(RuntimeError, match=f"{where} became (nan|inf) at step 0"):
        train(_cfg(tmp_path, model="lstm", grad_clip=1.0))
    net, before = built[0]
    for q, q0 in zip(net.parameters(), before):
        assert torch.equal(q, q0)


def test_existing_run_needs_resume_and_same_config(tmp_path):
    train(_cfg(tmp_path, epochs=1))
    with pytest.raises(ValueError, match="--resume"):
        train(_cfg(tmp_path, epochs=1))
    with pytest.raises(ValueError, match=r"different configuration \(lr\)"):
        train(_cfg(tmp_path, epochs=1, lr=0.5), resume=True)


def test_bad_checkpoints_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        eval_checkpoint(tmp_path / "nope.pt", device="cpu")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt"):
        eval_checkpoint(bad, device="cpu")
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(ValueError, match="not a qlam model checkpoint"):
        eval_checkpoint(other, device="cpu")


def test_config_files_and_cli(tmp_path, capsys):
    toml = tmp_path / "c.toml"
    toml.write_text(f'out = "{tmp_path / "cli"}"\nepochs = 1\nbatch_size = 32\nd_model = 8\n'
                    'n_layers = 1\nn_heads = 1\nn_qubits = 2\n')
    assert read_config_file(toml)["epochs"] == 1
    assert main(["train", "--config", str(toml), "--lr", "0.01"]) == 0
    saved = json.loads((tmp_path / "cli" / "summary.json").read_text())
    assert saved["config"]["lr"] == 0.01 and saved["config"]["batch_size"] == 32
    out_json = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(tmp_path / "cli" / "model.pt"), "--device", "cpu",
                 "--json", str(out_json)]) == 0
    assert json.loads(out_json.read_text())["test_acc"] == pytest.approx(saved["test_acc"])
    assert main(["eval", "--checkpoint", str(tmp_path / "cli" / "model.pt"), "--device", "cpu",
                 "--shots", "64"]) == 0
    bad = tmp_path / "bad.toml"
    bad.write_text("epochz = 3\n")
    assert main(["train", "--config", str(bad)]) == 2
    assert "unknown config keys: epochz" in capsys.readouterr().err


def test_demo_trains_evaluates_and_plots(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    assert "test accuracy" in capsys.readouterr().out
    png = out / "learning_curve.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "summary.json").read_text())["n_train"] == 96


def _records(run):
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in recs if "val_acc" not in r], [r for r in recs if "val_acc" in r]


def test_step_records_average_to_the_epoch_and_survive_a_resume(tmp_path):
    """Every 2 of the 6 equal batches per epoch a step record; the mean of an epoch's three
    window averages is that epoch's training loss/accuracy. A run preempted after step 3
    (one record written, step 2) and resumed logs the same records as an uninterrupted one."""
    train(_cfg(tmp_path / "a", log_every=2))
    steps, epochs = _records(tmp_path / "a" / "run")
    assert [r["step"] for r in steps] == [2, 4, 6, 8, 10, 12]
    assert [r["epoch_frac"] for r in steps] == pytest.approx([1 / 3, 2 / 3, 1, 4 / 3, 5 / 3, 2])
    assert [(r["epoch"], r["step"], r["epoch_frac"]) for r in epochs] == [(1, 6, 1.0), (2, 12, 2.0)]
    for e, ep in enumerate(epochs):
        window = steps[3 * e: 3 * e + 3]
        assert sum(r["train_loss"] for r in window) / 3 == pytest.approx(ep["train_loss"])
        assert sum(r["train_acc"] for r in window) / 3 == pytest.approx(ep["train_acc"])
    assert all(r["lr"] > 0 and r["tokens_per_s"] > 0 for r in steps)

    b = tmp_path / "b" / "run"
    train(_cfg(tmp_path / "b", log_every=2, stop_after_steps=3))
    with open(b / "metrics.jsonl", "a") as f:  # a record the killed run wrote after its checkpoint
        f.write(json.dumps({"step": 4, "train_loss": -1.0, "train_acc": -1.0}) + "\n")
    train(_cfg(tmp_path / "b", log_every=2), resume=True)
    steps_b, epochs_b = _records(b)
    assert [r["step"] for r in steps_b] == [2, 4, 6, 8, 10, 12]
    for r, s in zip(steps_b + epochs_b, steps + epochs):
        assert r["train_loss"] == pytest.approx(s["train_loss"], rel=1e-6)
        assert r["train_acc"] == s["train_acc"]


def test_tensorboard_event_files_hold_the_logged_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    train(_cfg(tmp_path, log_every=3, tensorboard=True))
    steps, epochs = _records(run)
    acc = EventAccumulator(str(run))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert tags == {"train/loss", "train/accuracy", "train/lr", "train/tokens_per_s",
                    "val/loss", "val/accuracy"}
    for tag, key, recs in [("train/loss", "train_loss", steps), ("train/accuracy", "train_acc", steps),
                           ("train/lr", "lr", steps), ("train/tokens_per_s", "tokens_per_s", steps),
                           ("val/loss", "val_loss", epochs), ("val/accuracy", "val_acc", epochs)]:
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [r["step"] for r in recs] == (
            [3, 6, 9, 12] if recs is steps else [6, 12])
        assert [e.value for e in events] == pytest.approx([r[key] for r in recs], rel=1e-6)


def test_learning_curve_of_a_one_epoch_run_has_a_training_curve(tmp_path):
    from qlam.plots import curves
    from qlam.store import read_jsonl

    train(_cfg(tmp_path, epochs=1, log_every=2))
    c = curves(read_jsonl(tmp_path / "run" / "metrics.jsonl"))
    assert c["train_x"] == pytest.approx([1 / 3, 2 / 3, 1]) and len(c["train_loss"]) == 3
    assert c["val_x"] == [1.0] and len(c["val_acc"]) == 1
    # a file from before step records: the per-epoch training figures
    old = [{"epoch": 1, "train_loss": 0.5, "train_acc": 0.8, "val_loss": 0.4, "val_acc": 0.9}]
    assert curves(old)["train_x"] == [1] and curves(old)["val_acc"] == [0.9]
    pytest.importorskip("matplotlib")
    from qlam.plots import learning_curve

    png = learning_curve([tmp_path / "run"], tmp_path / "curve.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_log_every(tmp_path):
    with pytest.raises(ValueError, match="log_every"):
        train(_cfg(tmp_path, log_every=0))


@pytest.mark.parametrize("kw", [dict(model="qlam-mixed"), dict(model="qlam", memory="mixed")])
def test_mixed_memory_trains_resumes_and_reevaluates(tmp_path, kw):
    cfg = _cfg(tmp_path, epochs=2, stop_after_steps=7, **kw)
    train(cfg)  # preempted inside the second epoch
    summary = train(_cfg(tmp_path, epochs=2, **kw), resume=True)
    full = train(_cfg(tmp_path / "full", epochs=2, **kw))
    assert summary["test_acc"] == pytest.approx(full["test_acc"])
    assert summary["val_acc"] == pytest.approx(full["val_acc"])
    res = eval_checkpoint(tmp_path / "run" / "model.pt", device="cpu")
    assert res["test_acc"] == pytest.approx(summary["test_acc"])
    ck = torch.load(tmp_path / "run" / "model.pt", weights_only=False)
    assert any(k.endswith("memory.log_gamma") for k in ck["model"])  # the mixed memory's
