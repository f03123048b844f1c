"""Documentation that is tested: the docstring examples run (doctest), and the API
reference site builds with `mkdocs build --strict` (warnings are errors; skipped cleanly
where the `docs` extra is not installed)."""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCTESTED = ["qlam", "qlam.memory.layer", "qlam.models.qlam", "qlam.circuit", "qlam.circuit_layer",
             "qlam.sim.measure", "qlam.sim.noise", "qlam.export", "qlam.data.npz_task",
             "qlam.data.tasks", "qlam.config", "qlam.train", "qlam.evaluate"]


@pytest.mark.parametrize("name", DOCTESTED)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def test_public_api_has_examples():
    import qlam
    from qlam import config, evaluate, export, train
    from qlam.data import npz_task, tasks
    from qlam.sim import measure, noise

    public = [qlam.QLAM, qlam.QLAMClassifier, qlam.Circuit, qlam.CircuitLayer, qlam.statevector,
              qlam.QLAM.step, measure.expval, measure.sample, noise.parse_noise,
              export.export_head, tasks.get_task, npz_task, config.TrainConfig, train.train,
              evaluate.load_model, evaluate.eval_checkpoint]
    for obj in public:
        assert ">>>" in (obj.__doc__ or ""), obj


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None
                    or importlib.util.find_spec("mkdocstrings") is None,
                    reason="the docs extra (mkdocs, mkdocstrings) is not installed")
def test_api_reference_builds_strict(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f",
                          str(ROOT / "mkdocs.yml"), "-d", str(tmp_path / "site")],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    page = (tmp_path / "site" / "api" / "layer" / "index.html").read_text()
    assert "QLAM" in page and "lengths" in page and "straight-through" in page
