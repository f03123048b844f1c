"""qlam.progress: a line per 10 % (or 30 s) in logs, redrawn in place on a terminal."""

from __future__ import annotations

import io

from qlam import progress
from qlam.progress import Progress


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_log_gets_a_line_every_tenth(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress.time, "time", clock)
    out = io.StringIO()
    bar = Progress(100, "epoch 1/1", stream=out)
    for i in range(1, 101):
        clock.now += 0.01
        bar.update(i, loss=0.5, acc=0.25)
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 10  # 10 %, 20 %, ..., 100 %
    assert lines[-1].startswith("epoch 1/1 [########################] 100/100 loss=0.5 acc=0.25")
    assert "\r" not in out.getvalue()


def test_log_gets_a_line_every_30_seconds_of_a_slow_epoch(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress.time, "time", clock)
    out = io.StringIO()
    bar = Progress(1000, stream=out)
    for i in range(1, 5):  # 0.4 % done, but 31 s per step
        clock.now += 31
        bar.update(i)
    assert len(out.getvalue().splitlines()) == 4


def test_terminal_redraws_in_place(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress.time, "time", clock)
    out = Tty()
    bar = Progress(4, "x", stream=out)
    for i in range(1, 5):
        clock.now += 1
        bar.update(i)
    bar.close()
    text = out.getvalue()
    assert text.count("\r") == 4 and text.endswith("\n") and "\n" not in text[:-1]


def test_disabled_bar_writes_nothing():
    out = Tty()
    bar = Progress(3, "rank 1", stream=out, disable=True)
    for i in range(1, 4):
        bar.update(i, loss=1.0)
    bar.close()
    assert out.getvalue() == ""
