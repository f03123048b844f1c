"""Peak-RSS benchmark (`qlam bench memory`): peak RAM of one QLAM training step against length.

**The step.** One :class:`qlam.memory.QLAM` layer (default query-basis readout) on a random
input (B, L, d_model), loss = sum over heads of the *final* state's probabilities times a
fixed random weight vector, then ``loss.backward()``. The loss reads only the final state
on purpose: a loss on every token's output would keep the readout of all L tokens (and its
autograd graph) alive through the backward, and those per-token outputs, not the
recurrence, would dominate the measurement. The layer still computes its outputs in the
forward (they are freed when the step drops them), and the recurrence still needs every
token's phases (its inputs) and returns their gradients, so some memory grows with L for
any backward.

**On a real task** (``task``, e.g. ``parity-running``): the step is instead one training
step of a whole one-layer :class:`qlam.models.QLAMClassifier` (embedding, QLAM block,
head) on a batch of that generated task at the measured length, with the task's own loss
(per-token cross-entropy for a ``-running`` task: every token's output is kept, so the
floor grows with L too; the recurrence's share is still peak - floor).

**Backwards compared** (``backward``): ``kernel`` (the compiled C++ forward and reversible
backward), ``reversible`` (the pure-PyTorch adjoint walk) and ``autograd`` (torch keeps every
token's intermediate states). A fourth measurement per length, the *floor*, runs the same
step with the recurrence replaced by a stub that allocates exactly what the recurrence's
contract must (its outputs, the saved inputs and their gradients) and keeps no state at all.
Each record carries

- ``peak_bytes``: the step's peak resident memory above the resident memory just before it;
- ``floor_bytes``: the same for the floor at that length;
- ``recurrence_bytes`` = peak_bytes - floor_bytes: what the recurrence itself keeps. Flat in
  L for a reversible backward; linear for autograd.

**How peak memory is measured.** Every measurement runs in a fresh Python process
(``python -m qlam.bench.rss CONFIG``), so nothing cached by an earlier measurement (the
allocator's free lists, a larger earlier step) hides or inflates this one. The child builds
the layer and the input, runs one warm-up step on 8 tokens (lazy initialisation: the kernel
library, thread pools), frees what it can (``gc.collect()``, glibc ``malloc_trim(0)``),
reads its resident set size (RSS, ``VmRSS``), resets the kernel's peak-RSS counter (writing
``5`` to ``/proc/self/clear_refs``, Linux >= 4.0), runs the step and reads the peak
(``VmHWM``): peak_bytes = VmHWM - VmRSS before (``method: "hwm"``). Where the counter
cannot be reset, peak_bytes = ``getrusage(RUSAGE_SELF).ru_maxrss`` after the step - RSS
before (``method: "maxrss"``), exact when the step's peak is the process's highest (long
sequences), an overestimate otherwise. RSS counts pages touched, which is what torch's CPU
allocator (no caching) hands back to the OS; one thread by default (``--threads``), since
each thread of the kernel owns work buffers.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from qlam.bench.common import fmt_bytes, without_kernel
from qlam.bench.common import markdown_table as common_table

BACKWARDS = ("kernel", "reversible", "autograd")
FLOOR = "floor"
WARMUP_TOKENS = 8
FULL_LENGTHS = [256, 512, 1024, 2048, 4096, 8192, 16384]
QUICK_LENGTHS = [256, 1024, 4096, 16384]


@dataclass
class Config:
    backward: str  # kernel | reversible | autograd | floor
    seq_len: int
    batch: int = 8
    n_qubits: int = 6
    heads: int = 4
    d_model: int = 64
    threads: int = 1
    seed: int = 0
    task: str | None = None  # a generated task: a classifier's training step on its data


# ---- inside the measuring process ---------------------------------------------------------
def _status_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return _status_bytes("VmHWM") is not None


def _maxrss_bytes() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024


def _trim() -> None:
    gc.collect()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


class _NullScan(torch.autograd.Function):
    """The floor: the recurrence's contract (outputs, saved inputs, input gradients) with
    no state kept and no work done."""

    @staticmethod
    def forward(ctx, psi0, phases, w, read_phases, w_read):
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(phases, w, read_phases, w_read)
        b, length, h, _, n = phases.shape
        return phases.new_full((b, length, h, n), 1.0 / n), psi0.clone()

    @staticmethod
    def backward(ctx, g_probs, g_last):
        def zeros(t):
            return None if t is None else torch.zeros_like(t)

        return (g_last, *(zeros(t) for t in ctx.saved_tensors))


def _null_scan(psi0, phases, w, read_phases=None, w_read=None, backward="auto"):
    return _NullScan.apply(psi0, phases, w, read_phases, w_read)


def _layer_step(cfg: Config, layer_cls, backward: str):
    """(step, x): one QLAM layer on random input, loss on the final state only."""
    layer = layer_cls(cfg.d_model, cfg.heads, cfg.n_qubits, backward=backward)
    g = torch.Generator().manual_seed(cfg.seed)
    x = torch.randn(cfg.batch, cfg.seq_len, cfg.d_model, generator=g)
    weights = torch.randn(cfg.heads, 2**cfg.n_qubits, generator=g)

    def step(inp: torch.Tensor) -> None:
        _, final = layer(inp)  # the per-token outputs are dropped here
        loss = (final.abs().square() * weights).sum()
        loss.backward()

    return step, x


def _task_step(cfg: Config, backward: str):
    """(step, x): a one-layer QLAMClassifier's training step on a batch of ``cfg.task``."""
    from qlam.data.tasks import generated_task
    from qlam.models.qlam import QLAMClassifier
    from qlam.objectives import batch_stats

    task = generated_task(cfg.task, length=cfg.seq_len, seed=cfg.seed, limit_train=cfg.batch,
                          limit_test=1, splits=("train",))
    per_token = task.target == "tokens"
    model = QLAMClassifier(task.n_features, task.n_classes, d_model=cfg.d_model, n_layers=1,
                           n_heads=cfg.heads, n_qubits=cfg.n_qubits,
                           pool="none" if per_token else "mean", discrete=task.discrete,
                           backward=backward)
    assert model.blocks[0].memory.backward_mode == backward
    x, y = task.train.x, task.train.y  # limit_train: exactly cfg.batch sequences

    def step(inp: torch.Tensor) -> None:
        # the warm-up passes a prefix: targets cut to it (a sequence label stays as it is)
        target = y[:, :inp.shape[1]] if per_token else y
        batch_stats(model(inp), target, task.target)[0].backward()

    return step, x


def measure_step(cfg: Config) -> dict:
    """Peak memory of one training step in *this* process (see the module docstring);
    :func:`measure` runs it in a fresh one."""
    import qlam.memory.layer as qmem  # its scan is swapped for the floor's stub below

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    floor = cfg.backward == FLOOR
    if cfg.backward not in (*BACKWARDS, FLOOR):
        raise ValueError(f"backward must be one of {(*BACKWARDS, FLOOR)}, got {cfg.backward!r}")
    backward = "reversible" if floor else cfg.backward
    step, x = (_task_step(cfg, backward) if cfg.task is not None
               else _layer_step(cfg, qmem.QLAM, backward))

    saved = qmem.scan
    if floor:
        qmem.scan = _null_scan
    try:
        step(x[:, :WARMUP_TOKENS].contiguous())
        _trim()
        rss0 = _status_bytes("VmRSS")
        method = "hwm" if rss0 is not None and _reset_peak() else "maxrss"
        if rss0 is None:  # no /proc: resource is all there is
            rss0 = _maxrss_bytes()
        t0 = time.perf_counter()
        step(x)
        seconds = time.perf_counter() - t0
        peak = _status_bytes("VmHWM") if method == "hwm" else _maxrss_bytes()
    finally:
        qmem.scan = saved
    out = asdict(cfg)
    out.update(peak_bytes=int(peak - rss0), rss_before_bytes=int(rss0), method=method,
               step_seconds=seconds)
    return out


# ---- the parent -----------------------------------------------------------------------------
def measure(cfg: Config, isolate: bool = True, timeout: float = 900) -> dict:
    """One measurement, in a fresh process unless ``isolate`` is False."""
    if not isolate:
        return measure_step(cfg)
    env = dict(os.environ, OMP_NUM_THREADS=str(cfg.threads), MKL_NUM_THREADS=str(cfg.threads))
    proc = subprocess.run([sys.executable, "-m", "qlam.bench.rss", json.dumps(asdict(cfg))],
                          capture_output=True, text=True, timeout=timeout, env=env)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"memory measurement {cfg} failed (exit {proc.returncode}): "
                           + " | ".join(tail))
    return json.loads(lines[-1])


def _mem_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def run_benchmark(lengths=tuple(FULL_LENGTHS), backwards=BACKWARDS, *, batch: int = 8,
                  n_qubits: int = 6, heads: int = 4, d_model: int = 64, threads: int = 1,
                  autograd_max_len: int | None = 8192, isolate: bool = True, floor: bool = True,
                  task: str | None = None,
                  log: Callable[[str], None] | None = None) -> list[dict]:
    """Records (one per backward and length) with ``backward``, ``seq_len``, ``peak_bytes``,
    ``floor_bytes``, ``recurrence_bytes`` and the configuration. Autograd runs up to
    ``autograd_max_len`` tokens, and stops earlier when the next length's predicted peak
    (linear in L from the last one) would exceed half the memory available now. ``task``: a
    generated task's classifier step instead of the bare layer's (module docstring)."""
    bad = [b for b in backwards if b not in BACKWARDS]
    if bad:
        raise ValueError(f"unknown backward(s) {bad}; choose from {', '.join(BACKWARDS)}")
    backwards = without_kernel(backwards, "kernel", log)
    records: list[dict] = []
    last: dict[str, dict] = {}
    for length in sorted(lengths):
        base = Config(FLOOR, length, batch, n_qubits, heads, d_model, threads, task=task)
        floor_rec = measure(base, isolate) if floor else None
        if log and floor_rec:
            log(f"  floor      L={length:<6}: {fmt_bytes(floor_rec['peak_bytes']):>11}")
        for b in backwards:
            if b == "autograd":
                if autograd_max_len is not None and length > autograd_max_len:
                    continue
                avail = _mem_available()
                if b in last and avail is not None:
                    predicted = last[b]["peak_bytes"] * length / last[b]["seq_len"]
                    if predicted > avail / 2:
                        if log:
                            log(f"  autograd   L={length}: skipped (predicted "
                                f"{fmt_bytes(predicted)}, {fmt_bytes(avail)} available)")
                        continue
            rec = measure(Config(b, length, batch, n_qubits, heads, d_model, threads, task=task),
                          isolate)
            if floor_rec is not None:
                rec["floor_bytes"] = floor_rec["peak_bytes"]
                rec["recurrence_bytes"] = rec["peak_bytes"] - floor_rec["peak_bytes"]
            records.append(rec)
            last[b] = rec
            if log:
                log(f"  {b:<10} L={length:<6}: {fmt_bytes(rec['peak_bytes']):>11} "
                    f"(recurrence {fmt_bytes(rec.get('recurrence_bytes'))}, "
                    f"{rec['step_seconds']:.1f} s)")
    return records


def slope(records: list[dict], backward: str, key: str = "peak_bytes") -> float | None:
    """Least-squares bytes per token of ``key`` against seq_len for one backward."""
    pts = [(r["seq_len"], r[key]) for r in records if r["backward"] == backward and key in r]
    if len(pts) < 2:
        return None
    n = len(pts)
    mx = sum(p[0] for p in pts) / n
    my = sum(p[1] for p in pts) / n
    var = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / var if var else None


def markdown_table(records: list[dict]) -> str:
    head = ["backward", "seq_len", "peak", "floor (inputs, outputs, their grads)",
            "recurrence (peak - floor)"]
    rows = [[r["backward"], r["seq_len"], fmt_bytes(r["peak_bytes"]),
             fmt_bytes(r.get("floor_bytes")), fmt_bytes(r.get("recurrence_bytes"))]
            for r in records]
    return common_table(head, rows)


def summary(records: list[dict]) -> list[str]:
    out = []
    if records:
        r = records[0]
        what = (f"a one-layer QLAMClassifier training on {r['task']}" if r.get("task")
                else "one QLAM layer")
        out.append(f"{what}: batch {r['batch']}, {r['heads']} heads x {r['n_qubits']} "
                   f"qubits, d_model {r['d_model']}, {r['threads']} thread(s), "
                   f"method {r['method']}")
    for b in dict.fromkeys(r["backward"] for r in records):
        rs = sorted((r for r in records if r["backward"] == b), key=lambda r: r["seq_len"])
        lo, hi = rs[0], rs[-1]
        line = (f"{b}: peak {fmt_bytes(lo['peak_bytes'])} at {lo['seq_len']} tokens, "
                f"{fmt_bytes(hi['peak_bytes'])} at {hi['seq_len']}")
        s = slope(records, b)
        if s is not None:
            line += f" ({s:,.0f} B/token)"
        if "recurrence_bytes" in lo:
            sr = slope(records, b, "recurrence_bytes")
            line += (f"; recurrence {fmt_bytes(lo['recurrence_bytes'])} -> "
                     f"{fmt_bytes(hi['recurrence_bytes'])}"
                     + (f" ({sr:,.0f} B/token)" if sr is not None else ""))
        out.append(line)
    return out


def plot(records: list[dict], path) -> None:
    """Peak and recurrence memory against length (log-log), one line per backward."""
    from qlam.bench.common import pyplot, save_figure

    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    mib = 1024.0**2
    floors = {r["seq_len"]: r["floor_bytes"] for r in records if "floor_bytes" in r}
    for b in dict.fromkeys(r["backward"] for r in records):
        rs = sorted((r for r in records if r["backward"] == b), key=lambda r: r["seq_len"])
        ax1.plot([r["seq_len"] for r in rs], [r["peak_bytes"] / mib for r in rs], "-o", label=b)
        if rs and "recurrence_bytes" in rs[0]:
            ax2.plot([r["seq_len"] for r in rs],
                     [max(r["recurrence_bytes"], 0) / mib for r in rs], "-o", label=b)
    if floors:
        ls = sorted(floors)
        ax1.plot(ls, [floors[k] / mib for k in ls], "k--", label="floor (no recurrence state)")
    ax1.set(xlabel="sequence length", ylabel="peak memory of a step (MiB)", xscale="log",
            yscale="log", title="training step")
    ax2.set(xlabel="sequence length", ylabel="MiB", xscale="log", yscale="symlog",
            title="recurrence's own memory (peak - floor)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    save_figure(fig, path)


if __name__ == "__main__":  # the measuring child: python -m qlam.bench.rss '{config}'
    result = measure_step(Config(**json.loads(sys.argv[1])))
    print(json.dumps(result), flush=True)
