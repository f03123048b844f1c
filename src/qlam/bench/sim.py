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
from qlam.bench.sim_impls import BASELINE, IMPLS, PEERS, QLAM_ROWS, Impl, make_setup
from qlam.sim.circuit_scan import min_factored_qubits
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
def check_agreement(impls: list[str], n_qubits: int = 3, tokens: int = 5,
                    atol: float = 1e-8, device: str = "cpu") -> None:
    """All implementations give the same loss and gradient (float64, small case, on
    ``device``); forward-only implementations are checked on the loss."""
    ref_loss = ref_grad = None
    for name in sorted(impls, key=lambda k: IMPLS[k].forward_only):
        s = make_setup(n_qubits, 3, tokens, torch.float64, seed=123, device=device)
        loss = IMPLS[name].run(s).cpu()
        grad = None if IMPLS[name].forward_only else s.theta.grad.detach().cpu().clone()
        if ref_loss is None:
            ref_loss, ref_grad, ref_name = loss, grad, name
            continue
        err = float((loss - ref_loss).abs())
        if grad is not None and ref_grad is not None:
            err = max(err, float((grad - ref_grad).abs().max()))
        if err > max(atol, IMPLS[name].atol or 0):
            raise RuntimeError(f"benchmark implementations disagree: {name} vs {ref_name}, "
                               f"max difference {err:.3g} in loss/gradient")


def tokens_for(impl: Impl, n_qubits: int, batch: int, seq_len: int, quick: bool) -> int:
    """Tokens one timed run of ``impl`` takes: the cap, then the work budget (>= MIN_TOKENS)."""
    cap = impl.quick_tokens if quick else impl.full_tokens
    tokens = min(seq_len, cap) if cap else seq_len
    cost = impl.cost
    if cost == "auto":
        cost = "factored" if n_qubits >= min_factored_qubits(cpp.available()) else "dense"
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
                  large: tuple[int, int] | None = None, device: str = "cpu") -> list[dict]:
    """Time every implementation at every (batch, n) on ``device`` ("cpu", "cuda", "cuda:1";
    rows that do not run there are left out, or refused when named in ``impls``); with
    ``large`` = (batch, seq_len), the sizes n >= LARGE_N run once at that batch and length
    instead. A row runs only at the register sizes it takes (:attr:`Impl.qubits`)."""
    dev = torch.device(device)
    names = impls or list(IMPLS)
    unknown = [n for n in names if n not in IMPLS]
    if unknown:
        raise ValueError(f"unknown implementation(s) {unknown}; known: {', '.join(IMPLS)}")
    missing = [n for n in names if not IMPLS[n].available()]
    if missing and impls:
        raise ValueError(f"implementation(s) {missing} unavailable (package not installed)")
    if missing and log:
        log(f"  skipped (not installed here): {', '.join(missing)}")
    names = [n for n in names if n not in missing]
    elsewhere = [n for n in names if not IMPLS[n].on_device(dev.type)]
    if elsewhere and impls:
        raise ValueError(f"implementation(s) {elsewhere} do not run on {dev.type} tensors")
    if elsewhere and log:
        log(f"  skipped (not on {dev.type}): {', '.join(elsewhere)}")
    names = [n for n in names if n not in elsewhere]
    if not names:
        raise ValueError(f"no implementation to run on {dev.type}")
    # the agreement case at a size every row takes (qlam-triton: 4 qubits and up)
    lo = max([IMPLS[n].qubits[0] for n in names if IMPLS[n].qubits] + [3])
    check_agreement(names, n_qubits=lo, device=device)
    reps = repeats if repeats is not None else (2 if quick else 3)
    batches = [batch] if isinstance(batch, int) else list(batch)
    cases = [(b, n, seq_len) for b in batches for n in n_list if not large or n < LARGE_N]
    if large:
        cases += [(large[0], n, large[1]) for n in n_list if n >= LARGE_N]
    records = []
    for b, n, length in cases:
        for name in (name for name in names if IMPLS[name].takes(n)):
            rec = measure(IMPLS[name], n, b, length, quick=quick, repeats=reps, dtype=dtype,
                          device=device)
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
