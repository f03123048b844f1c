"""A command's figure: the PNG where matplotlib (the ``plot`` extra) is installed; where it
is not, no file and the command's "no plot" line instead, its other results written all the
same."""

from __future__ import annotations

import importlib.util
from pathlib import Path

PNG = b"\x89PNG\r\n\x1a\n"
HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def check_plot(path, said: str) -> None:
    """``path`` is a PNG, or, without matplotlib, absent and ``said`` (the command's output)
    names the missing extra."""
    if HAVE_MATPLOTLIB:
        assert Path(path).read_bytes()[:8] == PNG, path
    else:
        assert not Path(path).exists(), path
        assert "plots need matplotlib" in said, said
