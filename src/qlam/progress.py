"""A dependency-free progress bar: redrawn in place on a terminal, a line every 10 % or
30 s otherwise (logs stay readable).

Why not tqdm: off a terminal tqdm still redraws with carriage returns, so a training log
(nohup, a scheduler's file) fills with one long line; this bar writes whole lines there.
"""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, desc: str = "", stream=None, disable: bool = False):
        """``disable``: show nothing (e.g. every distributed rank but the first)."""
        self.total, self.desc, self.disable = total, desc, disable
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.t0 = self.last = time.time()
        self.last_frac = 0.0
        self.line = ""

    def update(self, done: int, **stats) -> None:
        if self.disable:
            return
        now = time.time()
        frac = done / max(self.total, 1)
        if not self.tty and frac - self.last_frac < 0.1 and now - self.last < 30 and done < self.total:
            return
        if self.tty and now - self.last < 0.2 and done < self.total:
            return
        self.last, self.last_frac = now, frac
        width = 24
        bar = "#" * int(width * frac) + "." * (width - int(width * frac))
        eta = (now - self.t0) / max(frac, 1e-9) * (1 - frac)
        parts = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in stats.items())
        self.line = (f"{self.desc} [{bar}] {done}/{self.total} {parts} "
                     f"{now - self.t0:.0f}s<{eta:.0f}s")
        self.stream.write(("\r" + self.line) if self.tty else (self.line + "\n"))
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self.line:
            self.stream.write("\n")
            self.stream.flush()
