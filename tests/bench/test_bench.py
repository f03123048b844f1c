"""`qlam bench`: the sim implementations agree; sim, memory, roofline, models and all run on
tiny sizes and write their tables, JSON and plots; memory measurements are sane."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch
from plots_check import HAVE_MATPLOTLIB, check_plot

from qlam.bench import models, roofline, rss, sim, sim_impls
from qlam.bench.cli import write_report
from qlam.cli import build_parser, main

PNG = b"\x89PNG\r\n\x1a\n"


def test_every_implementation_computes_the_same_loss_and_gradient():
    sim.check_agreement([n for n, impl in sim_impls.IMPLS.items()
                         if impl.available() and impl.on_device("cpu")], n_qubits=3,
                        tokens=4, atol=1e-9)


def test_rows_run_on_their_devices_and_register_sizes(monkeypatch):
    """A row that does not run on the benchmark's device is left out (logged) or, named,
    refused; a row runs only at the register sizes it takes; qlam-triton's sizes are the
    Triton engine's and it runs on CUDA only, the C++ kernel on the CPU only."""
    gpu = sim_impls.Impl("gpu-row", sim_impls.run_compiled, on_device=lambda d: d == "cuda")
    three = sim_impls.Impl("three-row", sim_impls.run_compiled, qubits=(3, 3))
    monkeypatch.setattr(sim, "IMPLS", {"qlam-compiled": sim_impls.IMPLS["qlam-compiled"],
                                       "gpu-row": gpu, "three-row": three})
    logs = []
    recs = sim.run_benchmark([2, 3], batch=2, seq_len=4, quick=True, repeats=1,
                             log=logs.append)
    assert sorted((r["impl"], r["n_qubits"]) for r in recs) == [
        ("qlam-compiled", 2), ("qlam-compiled", 3), ("three-row", 3)]
    assert any("not on cpu" in line and "gpu-row" in line for line in logs)
    with pytest.raises(ValueError, match="gpu-row: not on cpu"):
        sim.run_benchmark([2], batch=2, seq_len=4, impls=["gpu-row"], repeats=1)
    triton_row, kernel_row = sim_impls.IMPLS["qlam-triton"], sim_impls.IMPLS["qlam-kernel"]
    assert triton_row.on_device("cuda") and not triton_row.on_device("cpu")
    assert kernel_row.on_device("cpu") and not kernel_row.on_device("cuda")
    assert [n for n in range(2, 9) if triton_row.takes(n)] == [4, 5, 6]
    if sim_impls.IMPLS["qlam-triton"].available():
        from qlam.sim.scan import triton_engine

        assert triton_row.qubits == (triton_engine.MIN_QUBITS, triton_engine.MAX_QUBITS)


@pytest.mark.cuda
def test_sim_benchmark_on_cuda(tmp_path):
    """On a GPU: the CUDA rows agree (the float64 check at 4 qubits, Triton's row included)
    and are timed there, each at the sizes it takes; the records name the device."""
    out = tmp_path / "cuda.json"
    rows = ["qlam-auto", "qlam-triton", "qlam-compiled", "qlam-factored", "qlam-reference"]
    assert main(["bench", "sim", "--device", "cuda", "--n", "4", "7", "--batch", "8",
                 "--seq-len", "16", "--repeats", "1", "--impl", *rows,
                 "--json", str(out)]) == 0
    records = json.loads(out.read_text())["records"]
    assert sorted((r["impl"], r["n_qubits"]) for r in records) == sorted(
        [(i, n) for i in rows for n in (4, 7) if (i, n) != ("qlam-triton", 7)])
    assert all(r["device"] == "cuda" and r["tokens_per_s"] > 0 for r in records)


@pytest.mark.cuda
def test_models_benchmark_on_cuda(tmp_path):
    out = tmp_path / "models.json"
    assert main(["bench", "models", "--device", "cuda", "--lengths", "32", "--batch", "4",
                 "--models", "qlam-kernel", "lstm", "--repeats", "1", "--precision", "fp32",
                 "bf16", "--json", str(out)]) == 0
    records = json.loads(out.read_text())["records"]
    assert {(r["model"], r["mode"]) for r in records} == {
        (m, mode) for m in ("qlam-kernel", "lstm", "qlam-kernel bf16", "lstm bf16")
        for mode in ("train", "infer")}
    assert all(r["device"] == "cuda" and r["tokens_per_s"] > 0 for r in records)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_cli_refuses_cuda_without_a_gpu(capsys):
    assert main(["bench", "sim", "--device", "cuda", "--n", "4", "--batch", "2"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_factored_rows_agree_where_the_phases_ride_in_the_gates():
    """From WIRE_MIN_QUBITS the factored kernel folds the circuit's RZ(x) phases into the
    gates; qlam-factored-rotated keeps rotating the state, qlam-factored-wire folds them at
    every size: all agree with the gate-by-gate reference (at the threshold and below it), and
    the threshold is restored after each."""
    from qlam.sim import circuit_scan as cs

    threshold = cs.WIRE_MIN_QUBITS
    names = ["qlam-reference", "qlam-factored", "qlam-factored-rotated", "qlam-factored-wire"]
    for n in (4, threshold):
        sim.check_agreement(names, n_qubits=n, tokens=4, atol=1e-9)
    assert cs.WIRE_MIN_QUBITS == threshold


def test_benchmark_circuit():
    c = sim_impls.benchmark_circuit(4)
    assert c.gate_count() == {"rz": 8, "ry": 4, "cnot": 4}
    assert c.n_params == 8 and c.n_inputs == 1
    assert [op.name for op in c.ops[:4]] == ["rz"] * 4 and all(op.is_input for op in c.ops[:4])


def test_register_a_new_implementation():
    calls = []

    def run(s):
        calls.append(s.tokens)
        return sim_impls.run_compiled(s)

    sim_impls.register(sim_impls.Impl("test-impl", run, quick_tokens=3))
    try:
        recs = sim.run_benchmark([2], batch=2, seq_len=6, quick=True,
                                 impls=["test-impl", "qlam-compiled"], repeats=1)
    finally:
        del sim_impls.IMPLS["test-impl"]
    assert [r["impl"] for r in recs] == ["test-impl", "qlam-compiled"]
    assert recs[0]["seq_len"] == 3 and recs[1]["seq_len"] == 6
    assert 3 in calls
    with pytest.raises(ValueError, match="unknown implementation"):
        sim.run_benchmark([2], impls=["nope"])


def test_cli_prints_table_and_writes_json(tmp_path, capsys):
    pytest.importorskip("pennylane")
    out, png = tmp_path / "bench.json", tmp_path / "sim.png"
    rc = main(["bench", "sim", "--n", "2", "3", "--batch", "1", "4", "--seq-len", "8",
               "--repeats", "1", "--threads", "1", "--json", str(out), "--plot", str(png)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "| impl | pass | n | batch | tokens run | tokens/s |" in text
    assert "n=3 batch=4: qlam-" in text
    data = json.loads(out.read_text())
    assert data["benchmark"] == "sim"
    assert {"date", "cores", "torch", "command", "loadavg_1min_start", "loadavg_1min_end",
            "threads"} <= set(data["meta"])
    assert data["meta"]["command"].startswith("qlam bench sim ")
    records = data["records"]
    available = [n for n, impl in sim_impls.IMPLS.items()
                 if impl.available() and impl.on_device("cpu")]
    assert len(records) == 2 * 2 * len(available)
    assert {r["device"] for r in records} == {"cpu"} and data["meta"]["device"] == "cpu"
    for r in records:
        assert {"impl", "n_qubits", "batch", "seq_len", "tokens_per_s", "mode"} <= set(r)
        assert r["tokens_per_s"] > 0 and r["batch"] in (1, 4) and r["n_qubits"] in (2, 3)
    assert png.read_bytes()[:8] == PNG


def test_cli_rejects_bad_sizes(capsys):
    assert main(["bench", "sim", "--batch", "0"]) == 2
    assert "must be >= 1" in capsys.readouterr().err


def test_token_budgets():
    dense, gates = sim_impls.IMPLS["qlam-compiled"], sim_impls.IMPLS["qlam-reference"]
    assert sim.tokens_for(dense, 6, 128, 784, quick=False) == 784
    assert sim.tokens_for(dense, 12, 128, 784, quick=False) == sim.MIN_TOKENS
    assert sim.tokens_for(gates, 6, 128, 784, quick=True) == 16  # the cap
    assert sim.tokens_for(gates, 12, 128, 784, quick=True) == sim.MIN_TOKENS
    assert sim.tokens_for(gates, 4, 1, 3, quick=True) == 3  # never more than asked


def test_memory_measurement_is_sane():
    """Each measurement in a fresh process: the recurrence's own memory (peak - floor) of the
    kernel's reversible backward stays flat; the PyTorch reversible grows far less than
    autograd, which stores every token."""
    from qlam.sim.scan import cpp

    backs = ["reversible", "autograd"] + (["kernel"] if cpp.available() else [])
    recs = rss.run_benchmark([128, 1024], backs, batch=2, n_qubits=4, heads=2, d_model=16)
    assert len(recs) == 2 * len(backs)
    by = {(r["backward"], r["seq_len"]): r for r in recs}
    for r in recs:
        assert {"backward", "seq_len", "peak_bytes", "batch", "n_qubits", "heads", "floor_bytes",
                "recurrence_bytes", "method"} <= set(r)
        assert 0 < r["peak_bytes"] < 2**30
    mib = 2**20

    def growth(b, key="peak_bytes"):
        return by[b, 1024][key] - by[b, 128][key]

    assert growth("autograd") > 10 * mib  # ~26 KiB per token here
    assert growth("reversible") < 0.5 * growth("autograd")
    if "kernel" in backs:
        assert abs(growth("kernel", "recurrence_bytes")) < 1 * mib
        assert growth("kernel") < 0.25 * growth("autograd")
    assert rss.slope(recs, "autograd") > rss.slope(recs, "reversible") > 0


def test_roofline_flop_convention():
    assert roofline.flops_per_token(6, "forward") == 8 * 64**2
    assert roofline.flops_per_token(6, "train") == 32 * 64**2
    u = roofline.random_product_unitary(3, torch.Generator().manual_seed(1))
    assert torch.allclose(u @ u.conj().T, torch.eye(8, dtype=u.dtype), atol=1e-12)
    assert (u.abs() > 0).all()  # dense


def test_roofline_speedups_and_verdicts():
    def rec(impl, n, b, rate, pct=100.0):
        return {"impl": impl, "mode": "train", "n_qubits": n, "batch": b,
                "tokens_per_s": rate, "pct_of_gemm": pct}

    recs = [rec("kernel", 4, 64, 600.0), rec("pytorch", 4, 64, 100.0),
            rec("kernel", 6, 128, 450.0), rec("pytorch", 6, 128, 100.0),
            rec("kernel", 8, 64, 300.0, pct=69.0), rec("pytorch", 8, 64, 100.0, pct=20.0)]
    assert roofline.speedups(recs) == {(4, 64): 6.0, (6, 128): 4.5, (8, 64): 3.0}
    lines = roofline.summary(recs)
    assert lines[1].endswith("(target 70%: missed: lowest 69% (1 points short))")
    assert lines[-1] == ("kernel / pytorch at n = 4..6 (measured here: n=4 B=64, n=6 B=128): "
                         "target 5x: missed: lowest 4.5x")
    recs[2]["tokens_per_s"] = 500.0
    assert roofline.summary(recs)[-1].endswith("target 5x: met")


def test_models_have_equal_parameter_counts():
    recs = models.run_benchmark([8], batch=2, quick=True, repeats=1, modes=("train",))
    target = recs[0]["target_params"]
    assert {r["model"] for r in recs} >= {"qlam-reversible", "lstm", "gru", "transformer", "ssm"}
    for r in recs:
        assert abs(r["n_params"] - target) / target < 0.1, r
        assert r["tokens_per_s"] > 0 and r["mode"] == "train"


def test_models_bf16_rows_and_their_ratio_to_the_lstm():
    from qlam.sim.scan import cpp

    if not cpp.available():
        pytest.skip("the qlam-kernel row needs the C++ kernel")
    recs = models.run_benchmark([8], batch=2, quick=True, repeats=1, modes=("train",),
                                rows=("qlam-kernel", "lstm"), precisions=("fp32", "bf16"))
    assert [(r["model"], r["precision"]) for r in recs] == [
        ("qlam-kernel", "fp32"), ("qlam-kernel bf16", "bf16"), ("lstm", "fp32"),
        ("lstm bf16", "bf16")]
    rate = {r["model"]: r["tokens_per_s"] for r in recs}
    line = f"L=8: qlam-kernel bf16 trains at {rate['qlam-kernel bf16'] / rate['lstm']:.2f}x the lstm tokens/s"
    assert line in models.summary(recs)
    # a ratio per QLAM row against the plain LSTM and the fastest LSTM row, not every pair
    fast = dict(recs[-1], tokens_per_s=10 * rate["lstm"])
    lines = [x for x in models.summary(recs[:3] + [fast]) if "trains at" in x]
    assert lines == [f"L=8: {q} trains at {rate[q] / b:.2f}x the {name} tokens/s"
                     for q in ("qlam-kernel", "qlam-kernel bf16")
                     for name, b in (("lstm", rate["lstm"]), ("lstm bf16", 10 * rate["lstm"]))]
    with pytest.raises(ValueError, match="precisions must be among fp32, bf16"):
        models.run_benchmark([8], batch=2, rows=("lstm",), precisions=("fp16",))


def test_models_compile_adds_compiled_rows(monkeypatch):
    import torch

    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda m, **kw: real(m, backend="aot_eager"))
    recs = models.run_benchmark([8], batch=2, quick=True, repeats=1, modes=("train",),
                                rows=("lstm",), precisions=("fp32",), compile=True)
    assert [(r["model"], r["compiled"]) for r in recs] == [("lstm", False),
                                                          ("lstm compiled", True)]
    assert all(r["warmup_s"] > 0 and r["tokens_per_s"] > 0 for r in recs)
    assert "L=8: " not in " ".join(models.summary(recs))  # no qlam-kernel row: no ratio


def test_models_quick_compile_compiles_before_the_timing(monkeypatch):
    """--quick --compile: the compiled row's graphs are all compiled in the untimed warm-up
    (dynamo's graph count does not move inside the timed runs)."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    real_compile, real_time = torch.compile, models._time
    monkeypatch.setattr(torch, "compile", lambda m, **kw: real_compile(m, backend="eager"))
    timed = []

    def spy(fn, repeats):
        before = counters["stats"]["unique_graphs"]
        out = real_time(fn, repeats)
        timed.append(counters["stats"]["unique_graphs"] - before)
        return out

    monkeypatch.setattr(models, "_time", spy)
    torch._dynamo.reset()
    counters.clear()
    models.run_benchmark([32], batch=2, quick=True, repeats=1, modes=("infer",),
                         rows=("gru",), compile=True)
    assert counters["stats"]["unique_graphs"] > 0  # the compiled row did compile
    assert timed == [0, 0]  # eager row, compiled row


def test_bench_all_writes_every_result_and_the_readme(tmp_path, capsys):
    """`qlam bench all` on tiny sizes: four JSON files with metadata, four PNGs, README."""
    from qlam.bench.cli import run_all

    tiny = {
        "sim": ["--n", "2", "--batch", "2", "--seq-len", "4", "--repeats", "1",
                "--impl", "qlam-compiled", "qlam-reference"],
        "memory": ["--lengths", "64", "--backward", "reversible", "--batch", "1",
                   "--n-qubits", "2", "--heads", "1", "--d-model", "4"],
        "roofline": ["--n", "3", "--batch", "2", "--gemm-sizes", "64", "--repeats", "1",
                     "--impl", "pytorch"],
        "models": ["--lengths", "6", "--batch", "2", "--repeats", "1",
                   "--models", "qlam-reversible", "lstm"],
    }
    args = build_parser().parse_args(["bench", "all", "--out", str(tmp_path), "--threads", "1"])
    assert run_all(args, extra=tiny) == 0
    said = capsys.readouterr().err
    keys = {"sim": {"impl", "n_qubits", "batch", "seq_len", "tokens_per_s"},
            "memory": {"backward", "seq_len", "peak_bytes", "batch", "n_qubits", "heads"},
            "roofline": {"impl", "mode", "n_qubits", "flops_per_s", "pct_of_gemm"},
            "models": {"model", "mode", "seq_len", "tokens_per_s", "n_params"}}
    for name, want in keys.items():
        data = json.loads((tmp_path / f"{name}.json").read_text())
        assert data["benchmark"] == name and data["records"]
        assert data["meta"]["command"].startswith("qlam bench all ")
        assert data["meta"]["equivalent_command"].startswith(f"qlam bench {name} ")
        assert {"date", "cores", "torch", "loadavg_1min_start"} <= set(data["meta"])
        for r in data["records"]:
            assert want <= set(r), (name, r)
        check_plot(tmp_path / f"{name}.png", said)
    # models are timed under qlam train's allocator policy (glibc: freed memory kept)
    meta = json.loads((tmp_path / "models.json").read_text())["meta"]
    if sys.platform == "linux" and os.environ.get("QLAM_KEEP_MEMORY") != "0":
        from qlam.allocator import THRESHOLD

        assert meta["malloc_mmap_threshold"] == str(THRESHOLD)
    readme = (tmp_path / "README.md").read_text()
    for title in ("Simulator", "Memory", "Roofline", "Models"):
        assert f"## {title}" in readme
    assert ("![roofline](roofline.png)" in readme) == HAVE_MATPLOTLIB and "| lstm |" in readme
    (tmp_path / "README.md").unlink()
    assert write_report(tmp_path).exists()


def test_bad_options_are_rejected(capsys):
    assert main(["bench", "memory", "--lengths", "0"]) == 2
    assert main(["bench", "roofline", "--n", "13"]) == 2
    assert main(["bench", "models", "--models", "nope", "--lengths", "4", "--batch", "1"]) == 2
    assert main(["bench", "report", "/nonexistent-dir"]) == 2
    err = capsys.readouterr().err
    assert "must be >= 1" in err and "unknown model row" in err


def test_memory_on_a_real_task_trains_the_classifier_with_each_backward():
    """--task: the step is a classifier's training step on the task's data and loss, with
    the backward asked for (the classifier must not fall back to its default)."""
    for backward in ("reversible", "autograd"):
        cfg = rss.Config(backward, 64, batch=2, n_qubits=3, heads=2, d_model=8,
                         task="parity-running")
        step, x = rss._task_step(cfg, backward)
        assert x.shape == (2, 64) and x.dtype == torch.long  # token ids of the real task
        step(x)
    rec = rss.measure(rss.Config("reversible", 64, batch=2, n_qubits=3, heads=2, d_model=8,
                                 task="s5-running"), isolate=False)
    assert rec["task"] == "s5-running" and rec["peak_bytes"] >= 0
    assert rss.summary([rec])[0].startswith("a one-layer QLAMClassifier training on s5-running")


def test_memory_cli_refuses_unknown_task(capsys):
    from qlam.cli import main

    assert main(["bench", "memory", "--task", "smnist", "--lengths", "64"]) == 2
    assert "--task must be a generated task" in capsys.readouterr().err


def test_bench_stream_times_every_row(tmp_path, capsys):
    out = tmp_path / "stream.json"
    rc = main(["bench", "stream", "--tokens", "3", "--batch", "2", "--d-model", "8",
               "--heads", "2", "--qubits", "2", "--repeats", "1", "--threads", "1",
               "--json", str(out)])
    assert rc == 0
    assert "| row | µs per token | µs per example-token | ÷ forward |" in capsys.readouterr().out
    records = json.loads(out.read_text())["records"]
    assert [r["row"] for r in records] == ["forward", "step", "step-rebuild", "mixed-forward",
                                           "mixed-step", "lstm-cell"]
    for r in records:
        assert r["us_per_token"] > 0
        assert r["us_per_example_token"] == pytest.approx(r["us_per_token"] / 2)
