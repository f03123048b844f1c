"""Simulator benchmark: training tokens/s of a QLAM-style recurrence.

Per token t the state is evolved by the same circuit (:func:`benchmark_circuit`): RZ(x_t) on
every qubit (the input), one trainable RY/RZ layer and a CNOT ring. The batch starts in
|0...0>, runs ``seq_len`` tokens, and the loss is the final state's probabilities weighted
by a fixed random vector; one measurement is forward + backward (the gradient of the loss
with respect to the trainable angles), and tokens/s = batch * tokens / seconds.

Every implementation runs the identical circuit from the identical qlam ``Circuit``:

- ``qlam-compiled``: the fast path the QLAM layer uses: the circuit compiled to one phase
  vector per token (from the inputs) and one fused dense unitary W, run by the real-pair
  scan (:mod:`qlam.sim.scan`, torch engine) with its reversible (adjoint) backward, the
  circuit lowered to scan layers by :func:`qlam.sim.lowering.scan_tables`;
- ``qlam-compiled-autograd``: the same scan with plain autograd through every token;
- ``qlam-kernel``: the same scan on the C++ engine (:mod:`qlam.sim.scan.cpp`: forward
  and reversible backward in C++), where it builds; ``qlam-triton``: on CUDA tensors, the
  same scan as Triton kernels (:mod:`qlam.sim.scan.triton_engine`, 4..6 qubits);
- ``qlam-factored``: each token's fixed block applied gate-factored, ``P (U_0 ⊗ ... ⊗
  U_{n-1})``, by the C++ kernel where it builds (else in PyTorch as ``P (A ⊗ B)``, two GEMMs
  and a gather, :mod:`qlam.sim.scan.factored`);
- ``qlam-auto``: what :func:`qlam.sim.circuit_scan.circuit_scan` picks by itself (factored
  from :func:`~qlam.sim.circuit_scan.min_factored_qubits` qubits, dense below);
- ``qlam-reference``: gate by gate with complex autograd (fewer tokens);
- ``pennylane-default.qubit``: PennyLane, torch interface, backprop, parameter broadcasting
  over the batch (fewer tokens);
- ``pennylane-lightning.qubit``: PennyLane's C++ simulator with adjoint differentiation
  (the loss as the expectation of the diagonal observable diag(weights); PennyLane splits
  the broadcast batch into one circuit per example; fewer tokens);
- ``tensorcircuit-jax``: TensorCircuit-NG on JAX (jit, vmap over the batch, lax.scan over
  the tokens; compile time recorded as ``compile_s``, outside the timing), complex64;
- ``qulacs``: Qulacs' C++ state vector with its adjoint ``backprop_inner_product``, one
  example at a time, complex128 (Qulacs has no single precision); fewer tokens;
  both adapters: :mod:`qlam.bench.sim_peers`;
- ``qiskit-aer-forward``: Qiskit Aer's statevector simulator on the same circuit, one
  parameter binding per example, **forward only** (Aer gives no gradients of a state):
  a run simulates the final states and computes the same loss, nothing more. Its rate is
  not a training rate; the table marks it ``forward``. Building and transpiling the
  parameterised circuit happens once before the timing (:attr:`Impl.prepare`).

TorchQuantum is not benchmarked here: its only release for Python 3.11 (0.1.8) pins qiskit < 1
and pulls its own torch and TensorFlow, so it cannot share an environment with qlam's peers
(benchmarks/peers/requirements-torchquantum.txt and benchmarks/peers/README.md say how to
run it in its own environment).

On a GPU (``device="cuda"``, ``qlam bench sim --device cuda``) the rows that run on CUDA
tensors are timed (qlam's PyTorch paths, ``qlam-triton``, ``qlam-auto``, the reference, and
TensorCircuit-NG on JAX's GPU where JAX has one), each run between two device
synchronisations; the others are left out. Records name the ``device``.

The dense implementations build the fused W from theta inside every step (as the QLAM layer
does); above ``qlam.sim.lowering.GENERIC_W_MAX_QUBITS`` qubits it is built from its
structure (the same matrix, a fraction of the memory).

Before any timing each row is checked against qlam's gate-by-gate reference (loss and
gradient, float64, a few tokens) at every size where qlam's dispatch changes up to the
largest timed one (:func:`check_sizes`); a disagreement stops the benchmark. A peer that is
not installed or fails to start is skipped, one that raises later (the check, a timed size)
is left out from there on: both recorded in the JSON's meta (``skipped``, ``failed``); an
error of qlam's own rows is raised.

Slow implementations run fewer tokens: each has a cap (``Impl.quick_tokens`` /
``full_tokens``) and a work budget per timed run (:func:`tokens_for`), which also shortens
the dense rows at n >= 10 (at least ``MIN_TOKENS``). The rate is per token, so rows stay
comparable; a short run amortises the per-step W build over fewer tokens, which makes the
qlam rates at large n conservative. Add an implementation with
:func:`qlam.bench.sim_impls.register`.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable

import torch

from qlam.bench import common, sim_peers
from qlam.bench.sim_impls import BASELINE, IMPLS, PEERS, QLAM_ROWS, Impl, make_setup, run_reference
from qlam.sim import circuit_scan
from qlam.sim.lowering import GENERIC_W_MAX_QUBITS
from qlam.sim.scan import cpp

MIN_TOKENS = 4
LARGE_N = 10  # run_benchmark(large=(batch, seq_len)) applies from this register size on
# work budgets per timed run: dense rows cost ~ max(batch, 16) * 4^n per token (a batch-1
# matvec streams the whole W, like a batch of ~16), gate-by-gate rows ~ batch * 2^n * n.
DENSE_BUDGET = {True: 2e9, False: 8e9}  # quick, full
# factored rows: ~ batch * 2^n * (n + 12) per token (the C++ kernel; qlam.sim.circuit_scan)
FACTORED_BUDGET = {True: 5e8, False: 3e9}
GATES_BUDGET = {True: 8.4e6, False: 3.4e7}
REPEAT_SECONDS = {True: 5.0, False: 20.0}  # stop repeating once this much time is spent


# ---- measuring ------------------------------------------------------------------------------
CHECK_BATCH, CHECK_TOKENS, CHECK_ATOL = 3, 5, 1e-8  # the agreement check's case (float64)


class Disagreement(RuntimeError):
    """An implementation's loss or gradient is not that of qlam's gate-by-gate reference."""


def _reference(n_qubits: int, tokens: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    s = make_setup(n_qubits, CHECK_BATCH, tokens, torch.float64, seed=123, device=device)
    loss = run_reference(s).cpu()
    return loss, s.theta.grad.detach().cpu()


def _agree(name: str, n_qubits: int, tokens: int, ref, atol: float, device: str) -> None:
    impl = IMPLS[name]
    s = make_setup(n_qubits, CHECK_BATCH, tokens, torch.float64, seed=123, device=device)
    err = float((impl.run(s).cpu() - ref[0]).abs())
    if not impl.forward_only:
        err = max(err, float((s.theta.grad.detach().cpu() - ref[1]).abs().max()))
    if err > max(atol, impl.atol or 0):
        raise Disagreement(f"benchmark implementations disagree at n = {n_qubits}: {name} vs "
                           f"qlam-reference, max difference {err:.3g} in loss/gradient")


def check_agreement(impls: list[str], n_qubits: int = 3, tokens: int = CHECK_TOKENS,
                    atol: float = CHECK_ATOL, device: str = "cpu") -> None:
    """Every implementation gives the loss and gradient of qlam's gate-by-gate reference
    (float64, a small case, on ``device``); forward-only ones are checked on the loss.
    Raises :class:`Disagreement` naming the implementation and n."""
    ref = _reference(n_qubits, tokens, device)
    for name in impls:
        _agree(name, n_qubits, tokens, ref, atol, device)


def check_sizes(names: list[str], n_list) -> list[int]:
    """Where the agreement check runs (each row at the sizes it takes): each row's smallest
    size from 3, and every size up to the largest timed one where qlam's dispatch changes:
    the C++ factored kernel (4), phases folded per wire (``WIRE_MIN_QUBITS``), "auto"
    factored without the kernel (``FACTORED_MIN_QUBITS``), the dense W built from its
    structure."""
    lows = {min(max(3, q[0]), q[1]) if (q := IMPLS[n].qubits) else 3 for n in names}
    changes = (cpp.FACTORED_LOW_QUBITS, circuit_scan.WIRE_MIN_QUBITS,
               circuit_scan.FACTORED_MIN_QUBITS, GENERIC_W_MAX_QUBITS + 1)
    return sorted(lows | {n for n in changes if min(lows) < n <= max(n_list)})


def unavailable(impl: Impl, device_type: str) -> str | None:
    """Why ``impl`` cannot run here, None where it can."""
    if not impl.available():
        return "not installed"
    try:
        if impl.start is not None:
            impl.start()
    except Exception as e:  # a broken install: reported with its error
        return f"failed to start: {type(e).__name__}: {e}"
    return None if impl.on_device(device_type) else f"not on {device_type}"


def _drop(name: str, error: Exception, where: dict, names: list[str], failed: list[dict],
          log) -> None:
    """A peer that failed: recorded in ``failed`` and removed from ``names``. A failure of
    qlam's own rows (qlam-*) or a disagreement is raised."""
    if name.startswith("qlam-") or isinstance(error, Disagreement):
        raise error
    failed.append({"impl": name, **where, "error": f"{type(error).__name__}: {error}"})
    names.remove(name)
    if log:
        log(f"  {failure_line(failed[-1])} (left out from here on)")


def failure_line(f: dict) -> str:
    """One line of a ``failed`` entry of :func:`run_benchmark`."""
    return f"{f['impl']} failed ({f['stage']}, n={f['n_qubits']} batch={f['batch']}): {f['error']}"


def tokens_for(impl: Impl, n_qubits: int, batch: int, seq_len: int, quick: bool) -> int:
    """Tokens one timed run of ``impl`` takes: the cap, then the work budget (>= MIN_TOKENS)."""
    cap = impl.quick_tokens if quick else impl.full_tokens
    tokens = min(seq_len, cap) if cap else seq_len
    cost = impl.cost
    if cost == "auto":
        cost = "factored" if n_qubits >= circuit_scan.min_factored_qubits(cpp.available()) else "dense"
    if cost == "dense":
        per_token, budget = max(batch, 16) * 4.0**n_qubits, DENSE_BUDGET[quick]
    elif cost == "factored":
        per_token = batch * 2.0**n_qubits * (n_qubits + 12)
        budget = FACTORED_BUDGET[quick]
    elif cost == "gates":
        per_token, budget = batch * 2.0**n_qubits * n_qubits, GATES_BUDGET[quick]
    else:
        return tokens
    return max(1, min(tokens, max(MIN_TOKENS, int(budget // per_token))))


def measure(impl: Impl, n_qubits: int, batch: int, seq_len: int, *, quick: bool,
            repeats: int, dtype=torch.float32, seed: int = 0, device: str = "cpu") -> dict:
    tokens = tokens_for(impl, n_qubits, batch, seq_len, quick)
    s = make_setup(n_qubits, batch, tokens, dtype, seed, device)
    impl.run(s.prefix(min(tokens, 4)))  # warm-up: allocations, imports, lazy init
    if impl.prepare is not None:
        impl.prepare(s)
    times: list[float] = []
    while len(times) < repeats and (not times or sum(times) < REPEAT_SECONDS[quick]):
        s.theta.grad = None
        common.synchronize(s.device)
        t0 = time.perf_counter()
        impl.run(s)
        common.synchronize(s.device)
        times.append(time.perf_counter() - t0)
    best = min(times)
    extra = {}
    if impl.version is not None:
        extra["version"] = impl.version()
    compile_s = sim_peers.COMPILE_SECONDS.get((impl.name, n_qubits, batch, tokens, str(dtype)))
    if compile_s is not None:
        extra["compile_s"] = compile_s
    return {
        "impl": impl.name, "n_qubits": n_qubits, "batch": batch, "seq_len": tokens,
        "tokens_per_s": batch * tokens / best, "mode": impl.mode,
        "seconds": best, "seconds_median": statistics.median(times), "repeats": len(times),
        "requested_seq_len": seq_len, "dtype": str(dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "device": s.device.type, "device_name": common.device_name(s.device),
        "machine": platform.machine(), "cpus": os.cpu_count(),
        "loadavg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "quick": quick, **extra,
    }


def run_benchmark(n_list=(4, 6, 8), batch: int | list[int] = 128, seq_len: int = 784, *,
                  quick: bool = False, impls: list[str] | None = None, repeats: int | None = None,
                  dtype=torch.float32, log: Callable[[str], None] | None = None,
                  large: tuple[int, int] | None = None, device: str = "cpu",
                  meta: dict | None = None) -> list[dict]:
    """Time every implementation at every (batch, n) on ``device`` ("cpu", "cuda", "cuda:1")
    after checking it against qlam's reference (:func:`check_sizes`); with ``large`` =
    (batch, seq_len), the sizes n >= LARGE_N run once at that batch and length instead. A row
    runs only at the register sizes it takes (:attr:`Impl.qubits`). Rows that cannot run here
    are left out (refused when named in ``impls``); a peer that fails (the check, a timed
    size) is left out from there on, qlam's own rows raise. ``meta`` gets ``skipped``
    ({impl: reason}), ``failed`` ([{impl, n_qubits, batch, stage, error}]) and
    ``agreement_n`` (the check's sizes)."""
    dev = torch.device(device)
    names = list(impls or IMPLS)
    unknown = [n for n in names if n not in IMPLS]
    if unknown:
        raise ValueError(f"unknown implementation(s) {unknown}; known: {', '.join(IMPLS)}")
    skipped = {n: why for n in names if (why := unavailable(IMPLS[n], dev.type))}
    reasons = "; ".join(f"{n}: {why}" for n, why in skipped.items())
    if skipped and impls:
        raise ValueError(f"implementation(s) cannot run here ({reasons})")
    if skipped and log:
        log(f"  skipped ({reasons})")
    names = [n for n in names if n not in skipped]
    if not names:
        raise ValueError(f"no implementation to run on {dev.type}")
    failed: list[dict] = []
    sizes = check_sizes(names, n_list)
    if meta is not None:
        meta.update(skipped=skipped, failed=failed, agreement_n=sizes)
    for n in sizes:
        ref = _reference(n, CHECK_TOKENS, device)
        for name in [m for m in names if IMPLS[m].takes(n)]:
            try:
                _agree(name, n, CHECK_TOKENS, ref, CHECK_ATOL, device)
            except Exception as e:  # _drop re-raises qlam's own rows' errors and disagreements
                where = {"n_qubits": n, "batch": CHECK_BATCH, "stage": "agreement check"}
                _drop(name, e, where, names, failed, log)
    reps = repeats if repeats is not None else (2 if quick else 3)
    batches = [batch] if isinstance(batch, int) else list(batch)
    cases = [(b, n, seq_len) for b in batches for n in n_list if not large or n < LARGE_N]
    if large:
        cases += [(large[0], n, large[1]) for n in n_list if n >= LARGE_N]
    records = []
    for b, n, length in cases:
        for name in [name for name in names if IMPLS[name].takes(n)]:
            try:
                rec = measure(IMPLS[name], n, b, length, quick=quick, repeats=reps, dtype=dtype,
                              device=device)
            except Exception as e:  # _drop re-raises qlam's own rows' errors
                _drop(name, e, {"n_qubits": n, "batch": b, "stage": "timing"}, names, failed, log)
                continue
            records.append(rec)
            if log:
                log(f"  {name:<26} n={n:<2} batch={b:<4}: {rec['tokens_per_s']:>12,.0f} "
                    f"tokens/s ({rec['mode']}, {rec['seq_len']} tokens, "
                    f"{rec['seconds']:.2f} s)")
    return records


def _rates(records: list[dict]) -> dict:
    return {(r["impl"], r["n_qubits"], r["batch"]): r["tokens_per_s"] for r in records}


def ratio(records: list[dict], impl: str, n_qubits: int, baseline: str = BASELINE,
          batch: int | None = None) -> float | None:
    """tokens/s of ``impl`` over ``baseline`` at n (and batch; default: the first batch)."""
    if batch is None:
        batch = next((r["batch"] for r in records if r["n_qubits"] == n_qubits), None)
    rate = _rates(records)
    if (impl, n_qubits, batch) in rate and (baseline, n_qubits, batch) in rate:
        return rate[impl, n_qubits, batch] / rate[baseline, n_qubits, batch]
    return None


def qlam_row(records: list[dict]) -> str | None:
    present = {r["impl"] for r in records}
    return next((name for name in QLAM_ROWS if name in present), None)


def markdown_table(records: list[dict], baseline: str = BASELINE) -> str:
    """One row per measurement; ``x baseline``: this row's rate over the baseline's;
    ``qlam ÷ this``: the qlam fast path's rate (kernel, else compiled) over this row's."""
    ref = qlam_row(records)
    head = ["impl", "pass", "n", "batch", "tokens run", "tokens/s", f"x {baseline}",
            f"{ref or 'qlam'} ÷ this"]
    rows = []
    for r in records:
        x = ratio(records, r["impl"], r["n_qubits"], baseline, r["batch"])
        q = ratio(records, ref, r["n_qubits"], r["impl"], r["batch"]) if ref else None
        rows.append([r["impl"], r.get("mode", "train"), r["n_qubits"], r["batch"], r["seq_len"],
                     f"{r['tokens_per_s']:,.0f}", "-" if x is None else f"{x:,.1f}",
                     "-" if q is None else f"{q:,.1f}"])
    return common.markdown_table(head, rows, left=2)


def peers_table(records: list[dict], qlam: str = "qlam-auto") -> str:
    """Side by side: one row per (n, batch), one tokens/s column per implementation, and
    ``qlam`` over the fastest training peer (rows not named qlam-*, forward-only ones left
    out)."""
    impls = list(dict.fromkeys(r["impl"] for r in records))
    rate = _rates(records)
    tokens = {(r["impl"], r["n_qubits"], r["batch"]): r["seq_len"] for r in records}
    keys = sorted({(r["n_qubits"], r["batch"]) for r in records})
    peers = [i for i in impls if i in PEERS and IMPLS.get(i) and not IMPLS[i].forward_only]
    rows = []
    for n, b in keys:
        cells = []
        for i in impls:
            v = rate.get((i, n, b))
            cells.append("-" if v is None else f"{v:,.0f} ({tokens[i, n, b]})")
        best = max(((rate[p, n, b], p) for p in peers if (p, n, b) in rate), default=None)
        q = rate.get((qlam, n, b))
        lead = "-" if best is None or q is None else f"{q / best[0]:,.2f}x {best[1]}"
        rows.append([n, b, *cells, lead])
    head = ["n", "batch", *impls, f"{qlam} ÷ fastest peer"]
    return common.markdown_table(head, rows, left=0)


def summary(records: list[dict], baseline: str = BASELINE) -> list[str]:
    """One line per (n, batch): the qlam fast paths' rate over the baseline's."""
    out = []
    keys = sorted({(r["n_qubits"], r["batch"]) for r in records})
    for n, b in keys:
        parts = [f"{name} {x:,.1f}x" for name in ("qlam-auto", "qlam-kernel", "qlam-compiled")
                 if (x := ratio(records, name, n, baseline, b)) is not None]
        if parts:
            out.append(f"n={n} batch={b}: " + ", ".join(parts) + f" {baseline} (training tokens/s)")
    return out


def target_note(records: list[dict], target: float = 30.0) -> str | None:
    """The issue's target: the fast path >= 30x default.qubit at n = 6, batch 128."""
    ref = qlam_row(records)
    x = ratio(records, ref, 6, BASELINE, 128) if ref else None
    if x is None:
        return None
    verdict = "met" if x >= target else f"missed by {target / x:.2f}x"
    return f"{ref} at n=6, batch 128: {x:,.1f}x {BASELINE} (target {target:.0f}x: {verdict})"


def plot(records: list[dict], path) -> None:
    """tokens/s against n, one panel per batch size, one line per implementation (dashed:
    forward only)."""
    from qlam.bench.common import pyplot, save_figure

    plt = pyplot()
    batches = sorted({r["batch"] for r in records})
    fig, axes = plt.subplots(1, len(batches), figsize=(6 * len(batches), 4.2), squeeze=False)
    for ax, b in zip(axes[0], batches):
        for name in dict.fromkeys(r["impl"] for r in records):
            rs = sorted((r for r in records if r["impl"] == name and r["batch"] == b),
                        key=lambda r: r["n_qubits"])
            if not rs:
                continue
            style = "--" if rs[0].get("mode") == "forward" else "-"
            label = name + (" (forward only)" if rs[0].get("mode") == "forward" else "")
            ax.plot([r["n_qubits"] for r in rs], [r["tokens_per_s"] for r in rs], style,
                    marker="o", label=label)
        ax.set(xlabel="qubits n", ylabel="tokens/s (forward + backward)", yscale="log",
               title=f"batch {b}")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    save_figure(fig, path)
