"""scripts/cuda_check.py, the prepared GPU check, known to run before a GPU is lent: it
names every file of ``cuda``-marked tests, those files collect without qlam's optional
packages (the GPU machine's image has none of the peers), and its timing steps run end to
end on the CPU (``--device cpu --tiny``)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("cuda_check", ROOT / "scripts" / "cuda_check.py")
cuda_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cuda_check)

# packages of qlam's extras and of the peers, absent from the GPU machine's image
ABSENT = ("qiskit", "qiskit_aer", "pennylane", "pennylane_lightning", "ray", "tensorcircuit",
          "qulacs", "torchquantum", "mkdocs")


def test_it_names_every_file_of_cuda_tests():
    marked = {str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py")
              if "mark.cuda" in p.read_text() and p.name != Path(__file__).name}
    assert marked == set(cuda_check.CUDA_TEST_FILES)


def _collect(block: bool) -> tuple[int, list[str]]:
    blocker = textwrap.dedent(f"""
        import importlib.abc, sys
        class Absent(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {ABSENT!r}:
                    raise ImportError(f"{{name}} is not installed (blocked)")
        sys.meta_path.insert(0, Absent())
    """) if block else ""
    code = blocker + textwrap.dedent(f"""
        import sys, pytest
        sys.exit(pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", "-m", "cuda",
                              *{list(cuda_check.CUDA_TEST_FILES)!r}]))
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    return proc.returncode, sorted(line for line in proc.stdout.splitlines() if "::" in line)


def test_its_tests_collect_without_the_optional_packages():
    rc, blocked = _collect(block=True)
    assert rc == 0, blocked
    rc_all, unblocked = _collect(block=False)
    assert rc_all == 0 and blocked == unblocked and len(blocked) >= 8


def test_its_timing_steps_run_on_the_cpu(tmp_path):
    assert cuda_check.main(["--device", "cpu", "--tiny", "--skip", "tests",
                            "--out", str(tmp_path)]) == 0
    scan = json.loads((tmp_path / "cuda_check.json").read_text())["records"]
    assert {(r["impl"], r["n_qubits"]) for r in scan} == {
        ("qlam-kernel", 4), ("qlam-reversible", 4), ("qlam-autograd", 4)}
    assert all(r["tokens_per_s"] > 0 for r in scan)
    sim = json.loads((tmp_path / "sim-cuda.json").read_text())
    rows = {r["impl"] for r in sim["records"]}
    assert {"qlam-auto", "qlam-compiled", "qlam-factored", "qlam-reference"} <= rows
    assert "qlam-triton" not in rows  # a CUDA row
    assert sim["meta"]["peer"].startswith("tensorcircuit-jax")
    assert "qlam-auto ÷ fastest peer" in (tmp_path / "sim-cuda.md").read_text()
    trained = json.loads((tmp_path / "models-cuda.json").read_text())["records"]
    assert {r["model"] for r in trained} == set(cuda_check.MODEL_ROWS)
    assert all(r["device"] == "cpu" and r["mode"] == "train" for r in trained)
    assert "trains at" in (tmp_path / "models-cuda.md").read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_it_refuses_to_run_without_a_gpu(tmp_path, capsys):
    assert cuda_check.main(["--out", str(tmp_path)]) == 2
    assert "no CUDA device" in capsys.readouterr().err
