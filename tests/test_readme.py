"""Every code block of the README is tagged with its language, and every ``python`` block
runs (in a fresh namespace, in a temporary directory), so the README cannot drift from the
code. Shell commands are tagged ``bash`` and layouts ``text``: they are not run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```\s*$", re.S | re.M)
LANGUAGES = {"python", "bash", "text"}


def _blocks() -> list[tuple[str, str, int]]:
    text = README.read_text()
    return [(m.group(1).strip(), m.group(2), text[:m.start()].count("\n") + 1)
            for m in FENCE.finditer(text)]


def test_every_block_is_tagged():
    blocks = _blocks()
    assert blocks
    for lang, _, line in blocks:
        assert lang in LANGUAGES, f"README.md:{line}: tag the block with one of {LANGUAGES}"


PYTHON = [(code, line) for lang, code, line in _blocks() if lang == "python"]


@pytest.mark.parametrize("code,line", PYTHON, ids=[f"line{line}" for _, line in PYTHON])
def test_python_block_runs(code, line, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "__readme__"})
