"""qlam sweep --executor ray: the executor's logic with an in-process stand-in for Ray (fast),
and a real local Ray instance on loopback (slow-ish) that must reach the local executor's
summaries, resume preempted runs and report a failing run with its log."""

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from tiny_tasks import install, tiny_task

from qlam import cluster, config
from qlam import sweep as S
from qlam.cli import main

GRID = dict(models=["gru", "lstm"], tasks=["smnist"], seeds=[0, 1])
SHARED = {"epochs": 2, "batch_size": 8, "params": 300, "n_layers": 1, "threads": 1}


class Ref:
    def __init__(self, value, error):
        self.value, self.error = value, error


class InlineRay:
    """Just enough of Ray's API, run eagerly in this process (tasks end in submission order)."""

    def __init__(self):
        self.submitted, self.cancelled, self.initialised = [], [], True

    def is_initialized(self):
        return self.initialised

    def remote(self, fn):
        ray = self

        class Task:
            def options(self, **opts):
                ray.submitted.append(opts)
                return self

            def remote(self, *args):
                try:
                    return Ref(fn(*args), None)
                except Exception as exc:  # noqa: BLE001
                    return Ref(None, exc)

        return Task()

    def wait(self, refs, num_returns=1, timeout=None):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        if ref.error is not None:
            raise ref.error
        return ref.value

    def cancel(self, ref):
        self.cancelled.append(ref)


def _summaries(root) -> dict:
    out = {}
    for m in GRID["models"]:
        for seed in GRID["seeds"]:
            s = json.loads((S.run_dir(root, "smnist", m, seed) / "summary.json").read_text())
            out[m, seed] = (s["test_acc"], s["val_acc"], s["params"], s["steps"])
    return out


def test_ray_executor_logic_inline(tmp_path, monkeypatch):
    """Submission options, a preempted run resumed on the next sweep, a failing run reported
    with its log (whose traceback names the error) while the others finish."""
    monkeypatch.setattr(config, "build_task", tiny_task)
    torch.set_num_threads(1)
    fake = InlineRay()
    monkeypatch.setattr(cluster, "ray_module", lambda: fake)
    root = tmp_path / "res"
    # lstm gets an impossible dropout: its runs fail; gru seed 0 is preempted after 1 step
    per_model = {"lstm": {"dropout": 2.0}}  # passes the config checks, fails in the model
    first = S.sweep(root, **GRID, shared={**SHARED, "stop_after_steps": 1}, per_model=per_model,
                    executor="ray", gpus=0.5, plot=False)
    assert [o["num_cpus"] for o in fake.submitted] == [1, 1, 1, 1]
    assert {o["num_gpus"] for o in fake.submitted} == {0.5}
    assert len(first["stopped"]) == 2 and first["done"] == 0
    failed = dict(first["failed"])
    assert set(failed) == {str(S.run_dir(root, "smnist", "lstm", s)) for s in (0, 1)}
    log = Path(failed[str(S.run_dir(root, "smnist", "lstm", 0))].split("; log: ")[1])
    assert log.is_file() and "Traceback" in log.read_text()

    second = S.sweep(root, **GRID, shared=SHARED, executor="ray", plot=False)
    assert second["done"] == 4 and second["resumed"] == 2 and second["failed"] == []
    assert "| sMNIST | GRU |" in (root / "TABLE.md").read_text()
    third = S.sweep(root, **GRID, shared=SHARED, executor="ray", plot=False)
    assert third["skipped"] == 4 and third["done"] == 0

    # the local executor reaches the same summaries
    local = tmp_path / "local"
    S.sweep(local, **GRID, shared=SHARED, plot=False)
    assert _summaries(local) == _summaries(root)


def test_ray_missing_gives_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(__import__("sys").modules, "ray", None)
    argv = ["sweep", "--models", "gru", "--seeds", "0", "--root", str(tmp_path), "--executor", "ray"]
    assert main(argv) == 2
    assert "pip install 'qlam[cluster]'" in capsys.readouterr().err
    assert main(["sweep", "--models", "gru", "--seeds", "0", "--root", str(tmp_path),
                 "--address", "auto"]) == 2
    assert "apply to --executor ray only" in capsys.readouterr().err


def test_real_ray_matches_local_and_resumes(tmp_path, monkeypatch):
    """A local Ray instance (2 CPUs, loopback): 2 models x 2 seeds preempted after one step,
    then resumed by the same sweep, reach the local executor's summaries."""
    ray = pytest.importorskip("ray")
    here = Path(__file__).parents[1]  # tests/, where tiny_tasks.py is
    src = Path(S.__file__).parents[1]
    env = {"PYTHONPATH": os.pathsep.join([str(src), str(here)]), "OMP_NUM_THREADS": "1"}
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": env, "worker_process_setup_hook": install})
    try:
        root = tmp_path / "ray"
        first = S.sweep(root, **GRID, shared={**SHARED, "stop_after_steps": 1}, executor="ray",
                        plot=False)
        assert len(first["stopped"]) == 4 and first["failed"] == []
        assert all((S.run_dir(root, "smnist", m, s) / "checkpoint.pt").is_file()
                   for m in GRID["models"] for s in GRID["seeds"])
        second = S.sweep(root, **GRID, shared=SHARED, executor="ray", plot=False)
        assert second["done"] == 4 and second["resumed"] == 4
    finally:
        ray.shutdown()
        for s, handler in handlers.items():  # Ray's SIGTERM handler must not outlive the test
            signal.signal(s, handler)
    monkeypatch.setattr(config, "build_task", tiny_task)
    torch.set_num_threads(1)
    local = tmp_path / "local"
    S.sweep(local, **GRID, shared=SHARED, plot=False)
    assert _summaries(local) == _summaries(root)
