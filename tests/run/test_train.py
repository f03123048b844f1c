"""Training loop: outputs, exact resume after preemption, eval, configs and bad files,
on a tiny synthetic task (no dataset download)."""

import dataclasses
import json
import os
import signal
import types

import pytest
import torch
from plots_check import check_plot

import qlam.objectives as objectives
import qlam.train as train_mod
from qlam import config
from qlam.cli import main
from qlam.data.tasks import Split, Task
from qlam.store import atomic_save, load_checkpoint
from qlam.train import TrainConfig, eval_checkpoint, read_config_file, train

real_build_task = config.build_task  # (the autouse fixture below swaps in a synthetic task)


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
    assert json.loads((run / "config.json").read_text()) == saved["config"] == json.loads(
        json.dumps(dataclasses.asdict(_cfg(tmp_path))))
    assert 0.0 <= saved["test_acc"] <= 1.0 and saved["epochs"] == 2
    assert saved["steps_per_epoch"] == 6 and saved["steps"] == 12  # 96 examples, batches of 16
    assert saved["params"] == sum(p.numel() for p in torch.load(
        run / "model.pt", weights_only=False)["model"].values())
    # the best-on-validation model reproduces the reported test accuracy
    res = eval_checkpoint(run / "model.pt", device="cpu")
    assert res["test_acc"] == pytest.approx(saved["test_acc"])


def test_bf16_precision_runs_the_training_forward_in_bfloat16(tmp_path):
    """--precision bf16: the linear layers of the training forward compute in bfloat16 (the
    QLAM memory's simulation in float32), evaluation in float32; fp32 touches no bfloat16."""
    seen = {"fp32": set(), "bf16": set()}
    for precision in seen:
        def hook(module, args, out, key=precision):
            for t in out if isinstance(out, tuple) else (out,):  # QLAM: (y, state)
                seen[key].add((module.training, type(module).__name__, t.dtype))

        handle = torch.nn.modules.module.register_module_forward_hook(hook)
        try:
            summary = train(_cfg(tmp_path / precision, precision=precision, epochs=1))
        finally:
            handle.remove()
        assert summary["config"]["precision"] == precision and 0 <= summary["test_acc"] <= 1
    assert (True, "Linear", torch.bfloat16) in seen["bf16"]
    assert (True, "QLAM", torch.complex64) in seen["bf16"]  # the simulated state: float32
    assert not any(dt == torch.bfloat16 for train_, _, dt in seen["bf16"] if not train_)
    assert not any(dt == torch.bfloat16 for *_, dt in seen["fp32"])


def test_compile_trains_through_torch_compile_like_eager(tmp_path, monkeypatch):
    """--compile: the training forward goes through torch.compile (here its aot_eager backend,
    no code generation) and the run's losses and accuracies equal the eager run's; the saved
    model is the plain module (loadable, no compile wrapper in its keys)."""
    calls = []
    real = torch.compile

    def spy(module, **kw):
        calls.append(module)
        return real(module, backend="aot_eager")

    monkeypatch.setattr(torch, "compile", spy)
    eager = train(_cfg(tmp_path / "eager", epochs=1))
    assert calls == []
    compiled = train(_cfg(tmp_path / "compiled", epochs=1, compile=True))
    assert len(calls) == 1
    for key in ("val_acc", "test_acc", "test_loss"):
        assert compiled[key] == pytest.approx(eager[key], rel=1e-5), key

    def epochs(name):
        lines = (tmp_path / name / "run" / "metrics.jsonl").read_text().splitlines()
        return [r for r in map(json.loads, lines) if "epoch" in r]

    (e,), (c,) = epochs("eager"), epochs("compiled")
    assert c["train_loss"] == pytest.approx(e["train_loss"], rel=1e-5)
    state = torch.load(tmp_path / "compiled" / "run" / "model.pt", weights_only=False)["model"]
    assert not any("_orig_mod" in k for k in state)
    assert eval_checkpoint(tmp_path / "compiled" / "run" / "model.pt", device="cpu")[
        "test_acc"] == pytest.approx(compiled["test_acc"])


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
    pytest.importorskip("yaml")
    for text, says in (("epochs: [1\n", "invalid YAML"),  # a traceback before
                       ("epochs: !!python/object/apply:os.system [echo hi]\n", "invalid YAML")):
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        assert main(["train", "--config", str(bad)]) == 2
        assert f"bad.yaml: {says}" in capsys.readouterr().err
    bad.write_bytes(b"epochs: 1\n\xff\n")
    assert main(["train", "--config", str(bad)]) == 2
    assert "bad.yaml: not UTF-8 text" in capsys.readouterr().err


def test_a_run_says_how_much_of_its_test_set_it_trained_on(tmp_path, capsys, use_task):
    """Parity at length 8: the test inputs are training inputs (warned, and in summary.json);
    at length 64 none are."""
    use_task(real_build_task)
    short = train(_cfg(tmp_path, task="parity", length=8, limit_train=2000, limit_test=100,
                       epochs=1, out=str(tmp_path / "short"), model="gru", d_model=8))
    warned = capsys.readouterr().err
    assert short["seen_in_train"]["test"] > 0.99 and "of the test and" in warned
    assert json.loads((tmp_path / "short" / "summary.json").read_text())["seen_in_train"] == \
        short["seen_in_train"]
    long = train(_cfg(tmp_path, task="parity", length=64, limit_train=100, limit_test=50,
                      epochs=1, out=str(tmp_path / "long"), model="gru", d_model=8))
    assert long["seen_in_train"] == {"val": 0.0, "test": 0.0}
    assert "also occur in the training set" not in capsys.readouterr().err


def test_a_transformer_on_a_per_token_task_attends_causally_by_default(tmp_path, use_task):
    """It had attended to later tokens (the recurrent models it is compared with cannot)
    unless --causal was given; --no-causal still asks for the whole sequence."""
    use_task(real_build_task)
    base = dict(task="parity-running", length=12, limit_train=64, limit_test=16, epochs=1,
                model="transformer", d_model=8, n_heads=2)
    for causal, want in ((None, True), (False, False)):
        out = tmp_path / str(causal)
        summary = train(_cfg(tmp_path, **base, causal=causal, out=str(out)))
        assert summary["config"]["causal"] is want
        model, _ = train_mod.load_model(out / "model.pt")
        x = torch.randint(0, 2, (1, 12))
        flipped = x.clone()
        flipped[0, -1] = 1 - flipped[0, -1]  # only the last token changes
        moved = (model(x) - model(flipped))[0, :-1].abs().max().item()
        assert (moved == 0.0) is want, moved
    summary = train(_cfg(tmp_path, **{**base, "task": "parity"}, out=str(tmp_path / "pooled")))
    assert summary["config"]["causal"] is None  # one label per sequence: not changed


def test_a_yaml_config_may_not_give_a_key_twice(tmp_path):
    """yaml.safe_load kept the last of two `epochs:` silently (TOML refuses them)."""
    pytest.importorskip("yaml")
    from qlam.config import read_config_file

    bad = tmp_path / "c.yaml"
    for text in ("epochs: 3\nlr: 0.1\nepochs: 5\n", "models:\n  gru:\n    lr: 1\n    lr: 2\n"):
        bad.write_text(text)
        with pytest.raises(ValueError, match=r"(?s)c.yaml: invalid YAML: .*'(epochs|lr)' is given twice"):
            read_config_file(bad)
    bad.write_text("base: &b {lr: 0.1, epochs: 2}\nmodels:\n  gru:\n    <<: *b\n    lr: 0.2\n")
    assert read_config_file(bad)["models"]["gru"] == {"lr": 0.2, "epochs": 2}  # merge keys


def test_a_lost_best_model_does_not_stick_a_resumed_run(tmp_path):
    """model.pt gone before --resume: said in the log, and the run finishes with the best of
    its remaining epochs (it had trained to the end, then failed loading model.pt, on every
    resume again)."""
    assert train(_cfg(tmp_path, epochs=3, stop_after_steps=7))["stopped"] == "preempted"
    run = tmp_path / "run"
    (run / "model.pt").unlink()
    summary = train(_cfg(tmp_path, epochs=3), resume=True)
    assert summary["best_epoch"] in (2, 3) and (run / "model.pt").is_file()
    assert "the best epoch's weights are lost" in (run / "train.log").read_text()


def test_an_empty_validation_split_is_refused_before_training(tmp_path, use_task):
    from qlam.data.tasks import Split

    task = synthetic_task()
    use_task(lambda cfg: dataclasses.replace(task, val=Split(task.val.x[:0], task.val.y[:0])))
    with pytest.raises(ValueError, match="has no validation examples"):
        train(_cfg(tmp_path, val_fraction=0.0))
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    for seed in (-1, 2**40):
        with pytest.raises(ValueError, match=r"seed must be in 0..2\^32 - 1"):
            train(_cfg(tmp_path, seed=seed))


def test_resume_without_a_checkpoint_starts_clean(tmp_path):
    """--resume where no checkpoint was written (killed before the first) starts over and
    drops the earlier attempt's records (metrics.jsonl had kept its lines twice)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 100, "train_loss": 9.0, "train_acc": 0.0}\n')
    (run / "summary.json").write_text("{}")
    train(_cfg(tmp_path, epochs=1), resume=True)
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("epoch") for r in recs] == [1] and recs[0]["train_loss"] != 9.0
    assert json.loads((run / "summary.json").read_text())["epochs"] == 1


def test_demo_trains_evaluates_and_plots(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    said = capsys.readouterr()
    assert "test accuracy" in said.out
    check_plot(out / "learning_curve.png", said.err)
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

    def same_as_uninterrupted(run):
        steps_r, epochs_r = _records(run)
        assert [r["step"] for r in steps_r] == [2, 4, 6, 8, 10, 12]
        for r, s in zip(steps_r + epochs_r, steps + epochs):
            assert r["train_loss"] == pytest.approx(s["train_loss"], rel=1e-6)
            assert r["train_acc"] == s["train_acc"]

    same_as_uninterrupted(b)
    # a checkpoint of an older qlam, without the record window in its state, written on a
    # record boundary (step 4): resumed, it logs the same records too
    c = tmp_path / "c" / "run"
    train(_cfg(tmp_path / "c", log_every=2, stop_after_steps=4))
    ck = load_checkpoint(c / "checkpoint.pt")
    del ck["state"]["window"]
    atomic_save(ck, c / "checkpoint.pt")
    train(_cfg(tmp_path / "c", log_every=2), resume=True)
    same_as_uninterrupted(c)


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


def test_the_scalar_log_is_closed_on_every_exit(tmp_path, monkeypatch):
    """A stopped run (preemption, --stop-after-steps) releases its TensorBoard writer as a
    finished one does."""
    logs = []

    class Counted(train_mod.ScalarLog):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.closed = False
            logs.append(self)

        def close(self):
            self.closed = True
            super().close()

    monkeypatch.setattr(train_mod, "ScalarLog", Counted)
    assert train(_cfg(tmp_path, stop_after_steps=3))["stopped"] == "preempted"
    train(_cfg(tmp_path), resume=True)
    assert len(logs) == 2 and all(log.closed for log in logs)


def test_threads_sets_torch_threads(tmp_path):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        train(_cfg(tmp_path, epochs=1, threads=2))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_plot_that_cannot_be_drawn_is_a_line_in_the_log(tmp_path, monkeypatch):
    import qlam.plots

    def no_plot(*args, **kwargs):
        raise RuntimeError("matplotlib is not installed")

    monkeypatch.setattr(qlam.plots, "learning_curve", no_plot)
    assert "test_acc" in train(_cfg(tmp_path, epochs=1))
    log = (tmp_path / "run" / "train.log").read_text()
    assert "no learning_curve.png: matplotlib is not installed" in log


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


def _final_weights(run):
    return torch.load(run / "checkpoint.pt", weights_only=True)["model"]


def _assert_same_run(a, b):
    """Same weights (final and best), same metrics (apart from timings) and same summary
    numbers."""
    wa, wb = _final_weights(a), _final_weights(b)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0, msg=k)
    ba, bb = (torch.load(r / "model.pt", weights_only=True)["model"] for r in (a, b))
    for k in ba:
        torch.testing.assert_close(ba[k], bb[k], rtol=0, atol=0, msg=f"model.pt {k}")

    def metrics(run):
        return [{k: v for k, v in json.loads(line).items()
                 if k not in ("epoch_s", "tokens_per_s", "wall_s")}
                for line in (run / "metrics.jsonl").read_text().splitlines()]

    assert metrics(a) == metrics(b)
    sa, sb = (json.loads((r / "summary.json").read_text()) for r in (a, b))
    for key in ("test_acc", "test_loss", "val_acc", "best_epoch", "steps", "epochs"):
        assert sa[key] == sb[key], key


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """A 2-epoch run (6 steps each) with dropout, so a broken RNG restore shows."""
    root = tmp_path_factory.mktemp("full")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(config, "build_task", synthetic_task)
        train(_cfg(root, dropout=0.2))
    return root / "run"


# first step, mid-epoch, the last step of an epoch, the first of the next, the very last
@pytest.mark.parametrize("stop", [1, 4, 6, 7, 12])
def test_resume_from_every_kind_of_stop_point(tmp_path, uninterrupted, stop):
    stopped = train(_cfg(tmp_path, dropout=0.2, stop_after_steps=stop))
    assert stopped == {"stopped": "preempted", "global_step": stop}
    train(_cfg(tmp_path, dropout=0.2), resume=True)
    _assert_same_run(uninterrupted, tmp_path / "run")


@pytest.mark.parametrize("budget, epoch", [(3, 1), (20, 2)])
def test_time_budget_stop_resumes_from_its_step_with_a_larger_budget(tmp_path, uninterrupted,
                                                                    monkeypatch, budget, epoch):
    """A run the time budget ended mid-epoch (validated and tested there), resumed with a
    larger budget, continues from the step it stopped at and ends as the uninterrupted run
    did (the rest of the epoch used to be skipped), its best model included: here the
    partial epoch's validation scores 100 % (it had stayed model.pt, never beaten)."""
    clock = iter(range(0, 10**6, 60))  # train's clock: every reading one minute later
    validations, real = [], train_mod.evaluate

    def evaluate(model, task, split, *args, **kwargs):  # the partial epoch's: 100 %
        validations.append(split)
        if validations.count("val") == epoch and split == "val":
            return 0.0, 1.0
        return real(model, task, split, *args, **kwargs)

    with monkeypatch.context() as mp:
        mp.setattr(train_mod, "time", types.SimpleNamespace(time=lambda: float(next(clock))))
        mp.setattr(train_mod, "evaluate", evaluate)
        first = train(_cfg(tmp_path, dropout=0.2, max_minutes=budget))
    run = tmp_path / "run"
    assert first["stopped"] == "time budget"
    assert 6 * (epoch - 1) < first["steps"] < 6 * epoch  # inside that epoch
    resumed = train(_cfg(tmp_path, dropout=0.2), resume=True)
    assert resumed["stopped"] is None and resumed["steps"] == 12
    _assert_same_run(uninterrupted, run)  # weights, metrics.jsonl, summary


def test_resuming_with_a_spent_time_budget_trains_no_further(tmp_path, monkeypatch):
    """The same --max-minutes again after a time-budget stop: no step more (one more step,
    validation and test had followed on every such resume)."""
    clock = iter(range(0, 10**6, 60))
    monkeypatch.setattr(train_mod, "time",
                        types.SimpleNamespace(time=lambda: float(next(clock))))
    first = train(_cfg(tmp_path, max_minutes=3))
    again = train(_cfg(tmp_path, max_minutes=3), resume=True)
    assert first["stopped"] == again["stopped"] == "time budget"
    assert again["steps"] == first["steps"] and again["test_acc"] == first["test_acc"]


def test_a_storm_of_stops_resumes_to_the_same_run(tmp_path, uninterrupted):
    """Stopped after every single step (each run resuming the previous one's checkpoint),
    the run still ends with the uninterrupted run's weights and metrics."""
    for stop in range(1, 12):
        res = train(_cfg(tmp_path, dropout=0.2, stop_after_steps=stop), resume=stop > 1)
        assert res == {"stopped": "preempted", "global_step": stop}
    train(_cfg(tmp_path, dropout=0.2), resume=True)
    _assert_same_run(uninterrupted, tmp_path / "run")


def test_learning_rate_sequence_with_warmup_and_cosine(tmp_path, monkeypatch):
    """Every optimizer step's lr, hand-derived: 12 steps, warmup int(12 * 0.25) = 3 steps
    (lr/3, 2lr/3, lr), then lr/2 (1 + cos(pi (s - 3) / 9)); memory parameters at half."""
    seen = []
    step = torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):
        seen.append([g["lr"] for g in self.param_groups])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    lr = 0.01
    train(_cfg(tmp_path, lr=lr, warmup_frac=0.25, lr_memory_scale=0.5))
    import math

    want = [lr / 3, 2 * lr / 3, lr] + [lr / 2 * (1 + math.cos(math.pi * (s - 3) / 9))
                                      for s in range(3, 12)]
    assert len(seen) == 12
    for s, (groups, w) in enumerate(zip(seen, want)):
        assert max(groups) == pytest.approx(w, abs=1e-15), s
        assert min(groups) == pytest.approx(w / 2, abs=1e-15), s  # the memory group
    recs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in recs] == pytest.approx([want[5], want[11]], abs=1e-15)


@pytest.mark.parametrize("flag", ["--limit-test", "--limit-train"])
def test_zero_limits_are_refused_not_reported(tmp_path, capsys, flag):
    assert main(["train", "--out", str(tmp_path / "r"), "--epochs", "1", "--d-model", "8",
                 "--n-layers", "1", "--n-heads", "1", "--n-qubits", "2", flag, "0"]) == 2
    assert f"{flag[2:].replace('-', '_')} must be >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "r" / "summary.json").exists()


def test_eval_limit_zero_is_refused(tmp_path, capsys):
    train(_cfg(tmp_path, epochs=1))
    out = tmp_path / "e.json"
    assert main(["eval", "--checkpoint", str(tmp_path / "run" / "model.pt"), "--device", "cpu",
                 "--limit", "0", "--json", str(out)]) == 2
    assert "limit must be an int >= 1, got 0" in capsys.readouterr().err
    assert not out.exists()


def test_an_empty_split_is_an_error_not_a_zero_accuracy():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
    task = synthetic_task()
    task.test = task.test.__class__(task.test.x[:0], task.test.y[:0])
    with pytest.raises(ValueError, match="test split has no examples"):
        train_mod.evaluate(model, task, "test", 8, "cpu")


@pytest.mark.parametrize("argv, message", [
    (["--batch-size", "0"], "batch_size must be >= 1, got 0"),
    (["--epochs", "0"], "epochs must be >= 1, got 0"),
    (["--lr", "inf"], "lr must be a finite number > 0, got inf"),
    (["--lr", "nan"], "lr must be a finite number > 0, got nan"),
    (["--eval-batch-size", "-1"], "eval_batch_size must be >= 1, got -1"),
    (["--warmup-frac", "2"], r"warmup_frac must be in \[0, 1\], got 2.0"),
    (["--precision", "fp16"], "precision must be one of fp32, bf16, got 'fp16'"),
])
def test_bad_train_settings_are_named(tmp_path, capsys, argv, message):
    code = main(["train", "--out", str(tmp_path / "r"), "--d-model", "8", "--n-layers", "1",
                 "--n-heads", "1", "--n-qubits", "2", *argv])
    assert code == 2
    import re

    assert re.search(message, capsys.readouterr().err)


def test_config_value_of_the_wrong_type_is_named(tmp_path, capsys):
    toml = tmp_path / "c.toml"
    toml.write_text('epochs = "abc"\n')
    assert main(["train", "--config", str(toml), "--out", str(tmp_path / "r")]) == 2
    assert "config epochs must be int, got 'abc' (str)" in capsys.readouterr().err
    toml.write_text("lr = 1\nbatch_size = 2.5\n")  # an int is a fine float; 2.5 is no int
    assert main(["train", "--config", str(toml), "--out", str(tmp_path / "r")]) == 2
    assert "config batch_size must be int, got 2.5 (float)" in capsys.readouterr().err


def test_out_naming_a_file_is_refused(tmp_path, capsys):
    f = tmp_path / "file.txt"
    f.write_text("keep me")
    assert main(["train", "--out", str(f), "--epochs", "1", "--d-model", "8"]) == 2
    assert "is a file; it must name a directory" in capsys.readouterr().err
    assert f.read_text() == "keep me"


def test_resume_without_a_checkpoint_says_it_starts_fresh(tmp_path, capsys):
    train(_cfg(tmp_path, epochs=1), resume=True)
    assert "no checkpoint at" in capsys.readouterr().err
    assert (tmp_path / "run" / "summary.json").exists()


def test_export_out_naming_a_directory_is_refused(tmp_path, capsys):
    train(_cfg(tmp_path, epochs=1))
    (tmp_path / "d").mkdir()
    assert main(["export", "--checkpoint", str(tmp_path / "run" / "model.pt"), "--index", "0",
                 "--out", str(tmp_path / "d")]) == 2
    assert "is a directory; it must name the QASM file" in capsys.readouterr().err


def test_a_repeated_epoch_end_replaces_its_metrics_record(tmp_path, uninterrupted, monkeypatch):
    """Killed after the epoch's metrics line but before its checkpoint, the resumed run
    repeats the epoch's end: one record per epoch, not two."""
    train(_cfg(tmp_path, dropout=0.2, stop_after_steps=6))
    real = train_mod.atomic_save
    calls = []

    def die_at_the_epoch_checkpoint(obj, path):
        calls.append(path)
        if str(path).endswith("checkpoint.pt"):
            raise KeyboardInterrupt("killed")
        return real(obj, path)

    monkeypatch.setattr(train_mod, "atomic_save", die_at_the_epoch_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(tmp_path, dropout=0.2), resume=True)
    monkeypatch.setattr(train_mod, "atomic_save", real)
    train(_cfg(tmp_path, dropout=0.2), resume=True)
    _assert_same_run(uninterrupted, tmp_path / "run")


STORM_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import qlam.config
import qlam.train as t
from test_train import _cfg, synthetic_task
from pathlib import Path
qlam.config.build_task = synthetic_task
t.train(_cfg(Path({root!r}), dropout=0.2, checkpoint_minutes=0.0005), resume=True)
"""


@pytest.mark.slow
def test_a_storm_of_sigkills_ends_in_the_uninterrupted_run(tmp_path, uninterrupted):
    """SIGKILL at random moments (checkpoints every 0.03 s), resume each time: the run ends
    with the uninterrupted run's weights, metrics and summary."""
    import random
    import subprocess
    import sys
    import time

    script = STORM_SCRIPT.format(tests=os.path.dirname(__file__), root=str(tmp_path))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    rng = random.Random(0)
    for _ in range(40):
        if (tmp_path / "run" / "summary.json").exists():
            break
        p = subprocess.Popen([sys.executable, "-c", script], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(2.0, 8.0))
        p.kill()
        p.wait()
    subprocess.run([sys.executable, "-c", script], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _assert_same_run(uninterrupted, tmp_path / "run")


@pytest.mark.cuda
def test_trains_on_cuda_resumes_there_and_evaluates_on_the_cpu(tmp_path):
    """On a GPU (heads of 4 qubits: the Triton engine; dropout, so the GPU's generator
    matters): a run stopped and resumed ends where the uninterrupted one does (the
    checkpoint's RNG states come back mapped to the GPU and are restored from there), and its
    best model evaluates on the CPU to the accuracy the run reported (within one test
    example: float32 logits on two devices)."""
    kw = dict(device="cuda", d_model=16, n_qubits=4, dropout=0.2)
    full = train(_cfg(tmp_path / "a", **kw))
    assert train(_cfg(tmp_path / "b", stop_after_steps=3, **kw))["stopped"] == "preempted"
    resumed = train(_cfg(tmp_path / "b", **kw), resume=True)
    assert resumed["steps"] == full["steps"]
    a = torch.load(tmp_path / "a" / "run" / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "b" / "run" / "checkpoint.pt", weights_only=False)["model"]
    for k in a:
        torch.testing.assert_close(a[k].cpu(), b[k].cpu(), rtol=0, atol=1e-5, msg=k)
    res = eval_checkpoint(tmp_path / "a" / "run" / "model.pt", device="cpu")
    assert res["test_acc"] == pytest.approx(full["test_acc"], abs=1.01 / 48)
