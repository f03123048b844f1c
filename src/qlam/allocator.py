"""Keep freed memory in the process (glibc malloc) while training and evaluating.

glibc hands blocks above its mmap threshold (at most 32 MiB by default) back to the kernel
when they are freed, and trims the free top of its heap: a training or evaluation step's
activations, tens of MB each, are then mapped anew every step and page-faulted in, zero-filled,
page by page (`qlam eval` on sMNIST spent half its time in the kernel). Raising both
thresholds keeps freed memory for the next step, at the price of the process holding its peak.
Process-wide, so only the commands that train or evaluate call it; processes started from
this one afterwards (`qlam train --distributed`'s spawned ranks) inherit it through glibc's
MALLOC_* variables, set here. A no-op off glibc, when the user set those variables, or with
QLAM_KEEP_MEMORY=0.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, <malloc.h>
THRESHOLD = 2**31 - 1  # mallopt takes an int: blocks up to 2 GiB stay in the heap


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds; True when they were set."""
    user_set = any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"))
    if (os.environ.get("QLAM_KEEP_MEMORY", "1") == "0" or user_set
            or "malloc" in os.environ.get("GLIBC_TUNABLES", "")):
        return False
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (musl, macOS, Windows)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if not (mallopt(M_MMAP_THRESHOLD, THRESHOLD) and mallopt(M_TRIM_THRESHOLD, THRESHOLD)):
        return False
    os.environ.update(MALLOC_MMAP_THRESHOLD_=str(THRESHOLD), MALLOC_TRIM_THRESHOLD_=str(THRESHOLD))
    return True
