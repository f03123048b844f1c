"""What every `qlam bench` subcommand shares: run metadata, the JSON file, the load warning.

A result file is one JSON object::

    {"benchmark": "sim", "meta": {...}, "records": [{...}, ...]}

``meta`` holds the date (UTC), the command line, the machine (CPU model, cores, threads),
the torch / Python / qlam versions, the git commit when run from a checkout, and the
1-minute load average before and after the run (timings taken while other work holds the
cores are not comparable: see :func:`load_warning`).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from qlam.atomic import atomic_write_text
from qlam.plots import available as plots_available  # noqa: F401  (the benchmarks plot through these)
from qlam.plots import pyplot, save_figure  # noqa: F401
from qlam.sim.scan import cpp


def loadavg() -> float | None:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str | None:
    root = Path(__file__).resolve().parents[3]
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _kernel_isa() -> str | None:
    try:
        return cpp.isa() if cpp.available() else None
    except Exception:  # noqa: BLE001 - metadata only
        return None


def synchronize(device: str | torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously; nothing to wait for on
    the CPU): timings start and end here."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: str | torch.device) -> str:
    """The GPU's name for a CUDA device, else the machine's architecture."""
    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine()


def without_kernel(items, name: str, log: Callable[[str], None] | None = None) -> list:
    """``items`` without ``name`` (a row that needs the C++ kernel) when the kernel cannot be
    built here; one log line says why."""
    if name not in items or cpp.available():
        return list(items)
    if log:
        log(f"  kernel unavailable ({cpp.error()}): skipping {name}")
    return [i for i in items if i != name]


def metadata(benchmark: str, command: str, **extra) -> dict:
    """The run's metadata; call at the start (``finish`` adds the end-of-run load)."""
    from qlam import __version__

    meta = {
        "benchmark": benchmark,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "system": platform.system(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "qlam": __version__,
        "git_commit": git_commit(),
        "loadavg_1min_start": loadavg(),
        "kernel_isa": _kernel_isa(),
    }
    meta.update(extra)
    return meta


def finish(meta: dict) -> dict:
    meta["loadavg_1min_end"] = loadavg()
    return meta


def command_line(args, skip: Iterable[str] = ()) -> str:
    """The subcommand as an explicit command line rebuilt from the parsed options (every
    effective value, so the line reproduces the run whatever the defaults become)."""
    words = ["qlam", "bench", args.bench_command]
    skip = set(skip) | {"func", "command", "bench_command", "debug"}
    for key, value in vars(args).items():
        if key in skip or key.startswith("_") or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            words.append(flag)
        elif isinstance(value, (list, tuple)):
            words += [flag, *map(str, value)]
        else:
            words += [flag, str(value)]
    return shlex.join(words)


def write_json(path: str | Path, meta: dict, records: list[dict]) -> Path:
    data = {"benchmark": meta.get("benchmark"), "meta": meta, "records": records}
    return atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def read_json(path: str | Path) -> tuple[dict, list[dict]]:
    with open(path) as f:
        data = json.load(f)
    if isinstance(data, list):  # the first format: a bare list of records
        return {}, data
    return data.get("meta", {}), data["records"]


def load_warning(log: Callable[[str], None]) -> None:
    load = loadavg()
    cpus = os.cpu_count() or 1
    if load is not None and load > cpus:
        log(f"warning: load average {load:.1f} exceeds {cpus} CPUs; timings are unreliable "
            f"(multi-threaded GEMMs suffer most; --threads 1 is steadier)")


def stderr_log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def markdown_table(head: list[str], rows: list[list], left: int = 1) -> str:
    """A Markdown table: the first ``left`` columns left-aligned, the others right-aligned
    (numbers); cells are written with str()."""
    align = "|" + "|".join(["---"] * left + ["---:"] * (len(head) - left)) + "|"
    lines = [head, *([str(c) for c in row] for row in rows)]
    cells = ["| " + " | ".join(line) + " |" for line in lines]
    return "\n".join([cells[0], align, *cells[1:]])


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    sign = "-" if n < 0 else ""
    n = abs(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{sign}{n:,.0f} {unit}" if unit == "B" else f"{sign}{n:,.1f} {unit}"
        n /= 1024
    return f"{sign}{n:.1f} GiB"


def fmt_rate(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"
