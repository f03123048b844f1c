"""qlam.allocator: freed blocks stay in the process, so a step's tensors are not page-faulted in
again every step (counted with getrusage's minor faults, in fresh processes)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

LOOP = r"""
import resource, torch
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
counts = []
for _ in range(16):  # a 'step': two 64 MiB tensors, written, then freed
    f0 = faults()
    x = torch.empty(16 << 20)
    x.fill_(1.0)
    y = x + 1
    counts.append(faults() - f0)
    del x, y
print(sorted(counts[-8:])[4])  # the median step after settling
"""
KEEP = "from qlam.allocator import keep_freed_memory\nprint(keep_freed_memory(), flush=True)\n"
# the loop in a process started after the call (as `qlam train --distributed` spawns its ranks)
CHILD = KEEP + f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', {LOOP!r}], check=True)\n"


def _run(code: str, **env) -> tuple[str, int]:
    full = {k: v for k, v in os.environ.items()
            if k not in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "QLAM_KEEP_MEMORY")}
    full.update(env)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=full, timeout=120)
    assert out.returncode == 0, out.stderr
    kept, faults = out.stdout.split()
    return kept, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
@pytest.mark.parametrize("where", ["this process", "a child process"])
def test_kept_memory_is_not_faulted_in_again(where):
    code = KEEP + LOOP if where == "this process" else CHILD
    kept, faults = _run(code)
    off, faults_off = _run(code, QLAM_KEEP_MEMORY="0")
    assert (kept, off) == ("True", "False")
    # default glibc: every step maps its 2 x 16,384 pages anew; kept: the typical step
    # reuses them (glibc still maps an occasional step anew, depending on the heap's layout)
    assert faults_off >= 2 * 16384
    assert faults < 1000


def test_user_malloc_settings_are_left_alone(monkeypatch):
    from qlam.allocator import keep_freed_memory

    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert keep_freed_memory() is False
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")
    monkeypatch.setenv("QLAM_KEEP_MEMORY", "0")
    assert keep_freed_memory() is False
