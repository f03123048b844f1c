"""scripts/mutation.py, the sampled mutation runner (issue 21, item 11), on a tiny project in
tmp_path: the sites it finds are the ones written out by hand, a mutant the tests catch is
reported killed, one they cannot see survived, and a second run resumes instead of redoing."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "mutation.py"


@pytest.fixture(scope="module")
def mutation():
    spec = importlib.util.spec_from_file_location("mutation_runner", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up by name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


TINY = '''\
def add(a, b):
    """Sum; a docstring is not mutated."""
    return a + b


def unseen(x):
    if x is None or x < 0:
        raise ValueError(f"bad x {x + 1}")
    return -x * 2
'''


def _project(tmp_path: Path) -> Path:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "tiny.py").write_text(TINY)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_tiny.py").write_text(
        "from tiny import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n")
    return tmp_path


def test_sites_are_the_hand_listed_ones(mutation, tmp_path):
    root = _project(tmp_path)
    source = (root / "src/tiny.py").read_text()
    got = {(m.kind, m.diff(source)[1]) for m in mutation.sites("src/tiny.py", root)}
    assert got == {
        ("return-None", "return None"),
        ("+->-", "return a - b"),
        ("is->is not", "if x is not None or x < 0:"),
        ("or->and", "if x is None and x < 0:"),
        ("<-><=", "if x is None or x <= 0:"),
        ("c->c+1", "if x is None or x < 1:"),
        # nothing from the raise line (its f-string and its `x + 1`)
        ("return-None", "return None"),
        ("*->/", "return -x / 2"),
        ("drop-", "return x * 2"),
        ("c->c+1", "return -x * 3"),
    }
    assert len(mutation.sites("src/tiny.py", root)) == 10  # the two return-None are two sites


def test_killed_survived_and_resume(mutation, tmp_path):
    root = _project(tmp_path)
    by_kind = {(m.line, m.kind): m for m in mutation.sites("src/tiny.py", root)}
    caught, blind = by_kind[(3, "+->-")], by_kind[(9, "*->/")]
    out = tmp_path / "out" / "sample.json"
    run = dict(files=["src/tiny.py"], tests=["tests/test_tiny.py"], n=100, seed=0, timeout=120,
               out_json=out, root=root, log=lambda *_: None)
    g = mutation.run_group("tiny", only={caught.id, blind.id}, **run)
    assert g["mutants"][caught.id]["outcome"] == "killed"
    assert "test_add" in g["mutants"][caught.id]["by"]
    assert g["mutants"][blind.id]["outcome"] == "survived"
    assert (root / "src/tiny.py").read_text() == TINY  # the project itself is never touched
    s = mutation.summary(g)
    assert (s["killed"], s["survived"], s["counted"], s["score"]) == (1, 1, 2, 0.5)

    recorded = json.loads(out.read_text())
    recorded["groups"]["tiny"]["mutants"][blind.id]["seconds"] = -1.0  # a marker
    out.write_text(json.dumps(recorded))
    g = mutation.run_group("tiny", only={caught.id, blind.id}, **run)
    assert g["mutants"][blind.id]["seconds"] == -1.0  # resumed: not run again


def test_sample_is_seeded_and_wilson_matches_hand_values(mutation):
    population = list(range(100))
    assert mutation.sample(population, 10, 21) == mutation.sample(population, 10, 21)
    assert mutation.sample(population, 10, 21) != mutation.sample(population, 10, 22)
    assert sorted(mutation.sample(population, 200, 0)) == population
    # Wilson 95 % for 8/8: [0.6756, 1]; for 27/30: [0.7438, 0.9654] (by hand from the formula)
    lo, hi = mutation.wilson(8, 8)
    assert lo == pytest.approx(0.6756, abs=1e-4) and hi == 1.0
    lo, hi = mutation.wilson(27, 30)
    assert lo == pytest.approx(0.7438, abs=1e-4) and hi == pytest.approx(0.9654, abs=1e-4)
