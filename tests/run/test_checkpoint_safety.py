"""Checkpoints are untrusted files: loading one never runs code from it (weights-only
unpickling), and its stored checksum refuses a file whose content changed (issue 21)."""

import pytest
import torch
from test_train import _cfg, synthetic_task

import qlam.train as train_mod
from qlam.cli import main
from qlam.store import CHECKSUM_KEY, atomic_save, content_digest, load_checkpoint


class Payload:
    """Unpickling this calls open(marker, "w"): it creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(autouse=True)
def _synthetic(use_task):
    use_task(synthetic_task)


def _crafted(tmp_path, name="model.pt"):
    """A model.pt that looks like qlam's, with the payload among its weights."""
    marker = tmp_path / "PWNED"
    path = tmp_path / name
    torch.save({"model_name": "qlam", "config": {}, "n_features": 1, "n_classes": 2,
                "model": {"w": Payload(marker)}}, path)
    return path, marker


def test_crafted_pickle_is_refused_without_running(tmp_path):
    path, marker = _crafted(tmp_path)
    with pytest.raises(ValueError, match="not a safe qlam checkpoint"):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("command", ["eval", "export", "robustness"])
def test_every_cli_loader_refuses_the_payload(tmp_path, capsys, command):
    path, marker = _crafted(tmp_path)
    argv = {"eval": ["eval", "--checkpoint", str(path), "--device", "cpu"],
            "export": ["export", "--checkpoint", str(path), "--index", "0", "--out",
                       str(tmp_path / "c.qasm")],
            "robustness": ["robustness", "--checkpoint", str(path), "--out",
                           str(tmp_path / "rob"), "--device", "cpu"]}[command]
    assert main(argv) == 2
    assert "not a safe qlam checkpoint" in capsys.readouterr().err
    assert not marker.exists()


def test_resume_refuses_the_payload(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    _, marker = _crafted(run, "checkpoint.pt")
    with pytest.raises(ValueError, match="not a safe qlam checkpoint"):
        train_mod.train(_cfg(tmp_path), resume=True)
    assert not marker.exists()


def test_saved_checkpoint_round_trips_with_its_checksum(tmp_path):
    ck = {"model": {"w": torch.randn(3, 4), "n": torch.tensor(7)}, "config": {"lr": 0.1},
          "state": {"stats": [0.5, 1, 2], "best": None}}
    atomic_save(ck, tmp_path / "a.pt")
    raw = torch.load(tmp_path / "a.pt", weights_only=True)
    assert raw[CHECKSUM_KEY] == content_digest(ck)
    back = load_checkpoint(tmp_path / "a.pt")
    assert CHECKSUM_KEY not in back and back["config"] == {"lr": 0.1}
    torch.testing.assert_close(back["model"]["w"], ck["model"]["w"], rtol=0, atol=0)


def _flip(path, needle: bytes, n=64):
    data = bytearray(path.read_bytes())
    at = data.find(needle)
    assert at >= 0, "tensor bytes not found in the file"
    for i in range(at, at + n):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_flipped_weight_bytes_are_refused(tmp_path):
    w = torch.linspace(-1, 1, 256)
    atomic_save({"model": {"w": w}}, tmp_path / "m.pt")
    _flip(tmp_path / "m.pt", w.numpy().tobytes()[:64])
    with pytest.raises(ValueError, match="fails its checksum"):
        load_checkpoint(tmp_path / "m.pt")


def test_tampered_trained_model_is_refused_by_eval(tmp_path, capsys):
    train_mod.train(_cfg(tmp_path, epochs=1))
    model_pt = tmp_path / "run" / "model.pt"
    w = torch.load(model_pt, weights_only=True)["model"]["head.weight"]
    _flip(model_pt, w.numpy().tobytes()[:16], n=16)
    assert main(["eval", "--checkpoint", str(model_pt), "--device", "cpu"]) == 2
    assert "fails its checksum" in capsys.readouterr().err


def test_checkpoint_without_checksum_loads_with_one_warning(tmp_path):
    """Files written before checksums existed (the committed results/*/*/model.pt) still
    load; the missing check is said once per file."""
    torch.save({"model": {"w": torch.ones(2)}}, tmp_path / "old.pt")
    with pytest.warns(UserWarning, match="no checksum"):
        ck = load_checkpoint(tmp_path / "old.pt")
    assert torch.equal(ck["model"]["w"], torch.ones(2))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_checkpoint(tmp_path / "old.pt")


def test_a_second_process_may_not_train_into_a_run_dir_in_use(tmp_path, capsys):
    """Two processes on one --out had both trained, each rewriting the other's checkpoint,
    metrics and model (a fresh start even deleted the first's records). The holder is another
    process, killed at the end: a killed run leaves no stale lock behind."""
    import os
    import signal
    import subprocess
    import sys

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"epoch": 1}\n')  # the first run's record
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from qlam.rundirs import run_lock\n"
         "with run_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(600)", str(run)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RuntimeError, match=rf"{run} is in use: another qlam process "
                                               rf"\(pid {holder.pid}\) is training there"):
            train_mod.train(_cfg(tmp_path))
        assert (run / "metrics.jsonl").read_text() == '{"epoch": 1}\n'
        assert not (run / "checkpoint.pt").exists()
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    summary = train_mod.train(_cfg(tmp_path))  # the lock went with its holder
    assert summary["epochs"] == 2
