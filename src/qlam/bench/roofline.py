"""Roofline benchmark: the recurrence's achieved FLOP/s against this machine's GEMM FLOP/s.

**What is timed.** The memory recurrence alone (:func:`qlam.sim.scan.scan`): one head,
one layer per token, ``psi <- W · diag(e^{i phi_t}) psi`` over B examples and L tokens, no
readout basis, float32; W is a dense random unitary (the Kronecker product of random
single-qubit unitaries: every entry nonzero, so the dense products cost what they cost for
any W), built once outside the timing. ``train`` is forward + backward (gradients of the
phases and of W, from a loss on the final state); ``forward`` is the forward under
``torch.no_grad()``. Implementations: ``kernel`` (the compiled C++ kernel,
``backward="kernel"``) and ``pytorch`` (the pure-PyTorch fast path: real-pair GEMM scan with
the reversible backward, ``backward="reversible"``).

**FLOP convention** (nominal, per token, per example, N = 2^n):

- a complex N x N matrix-vector product counts 8 N^2 real flops (N^2 complex multiply-adds
  of 4 multiplies + 4 adds), whatever the algorithm: the kernel's three-real-GEMM (Gauss)
  form does 6 N^2, so its *actual* arithmetic rate is 3/4 of the nominal one reported;
- forward: one product with W, 8 N^2;
- backward: undo the step on the state (W^† psi, 8 N^2), carry the adjoint back
  (W^† g, 8 N^2) and accumulate the gradient of W (an outer product, 8 N^2): 24 N^2;
- train = 32 N^2; the O(N) work (phase rotations, |.|^2, renormalisation) is not counted
  (below 1.2 % of the total for n >= 6).

**The machine's limit.** ``torch.mm`` of two square float32 matrices (sizes ``gemm_sizes``,
2 M^3 flops each, best of a few runs, the same thread count); the best of them is the
reference, ``pct_of_gemm`` = achieved / reference. Each record also carries the GEMM rate
at the recurrence's own shape ((B x 2N) @ (2N x 2N), ``gemm_shape_flops_per_s``): what a
library GEMM reaches on a product that small.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable

import torch

from qlam.bench.common import markdown_table as common_table
from qlam.bench.common import without_kernel
from qlam.sim.scan import scan

IMPLS = {"kernel": "kernel", "pytorch": "reversible"}  # row name -> scan backward
FLOP_BUDGET = {True: 2e10, False: 1e11}  # train flops per timed run (quick, full)
MAX_TOKENS = 1024
# at least this many tokens: the timing is of a sequence, not of the per-call setup (packing
# the matrices, O(N^2)), which a 2-token run at n = 12 would mostly be
MIN_TOKENS = 8
REPEAT_SECONDS = {True: 3.0, False: 10.0}


def flops_per_token(n_qubits: int, mode: str) -> float:
    """Nominal real flops per token and example (see the module docstring)."""
    n2 = 4.0**n_qubits
    return {"forward": 8 * n2, "train": 32 * n2}[mode]


def _best(fn: Callable[[], None], repeats: int, seconds: float) -> tuple[float, int]:
    fn()  # warm-up
    times: list[float] = []
    while len(times) < repeats and (not times or sum(times) < seconds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), len(times)


def gemm_flops(m: int, k: int | None = None, n: int | None = None, repeats: int = 5,
               seconds: float = 3.0, dtype=torch.float32) -> float:
    """Best FLOP/s of ``torch.mm`` of (m x k) @ (k x n) (square when k, n are omitted)."""
    k = m if k is None else k
    n = m if n is None else n
    g = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=g, dtype=dtype)
    b = torch.randn(k, n, generator=g, dtype=dtype)
    out = torch.empty(m, n, dtype=dtype)
    # enough products per timing that a small shape is not all call overhead
    inner = max(1, int(2e8 // (2 * m * k * n)))

    def run():
        for _ in range(inner):
            torch.mm(a, b, out=out)

    best, _ = _best(run, repeats, seconds)
    return 2.0 * m * k * n * inner / best


def random_product_unitary(n_qubits: int, generator: torch.Generator) -> torch.Tensor:
    """A dense N x N unitary (complex128): the Kronecker product of random 2x2 unitaries."""
    u = torch.ones(1, 1, dtype=torch.complex128)
    for _ in range(n_qubits):
        z = torch.randn(2, 2, 2, generator=generator, dtype=torch.float64)
        q, r = torch.linalg.qr(torch.complex(z[0], z[1]))
        u = torch.kron(u, q * (torch.diagonal(r) / torch.diagonal(r).abs()))
    return u


def make_inputs(n_qubits: int, batch: int, tokens: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    n = 2**n_qubits
    u = random_product_unitary(n_qubits, g)
    w = torch.stack([u.real, u.imag]).float().reshape(1, 1, 2, n, n).contiguous()
    phases = (2 * math.pi * torch.rand(batch, tokens, 1, 1, n, generator=g)).contiguous()
    psi0 = torch.zeros(batch, 1, 2, n)
    psi0[:, 0, 0, 0] = 1
    weights = torch.randn(n, generator=g)
    return psi0, phases, w, weights


def tokens_for(n_qubits: int, batch: int, quick: bool) -> int:
    per = flops_per_token(n_qubits, "train") * batch
    return max(MIN_TOKENS, min(MAX_TOKENS, int(FLOP_BUDGET[quick] // per)))


def measure(impl: str, n_qubits: int, batch: int, *, quick: bool, repeats: int = 3,
            modes=("train", "forward"), seq_len: int | None = None) -> list[dict]:
    """Records of one implementation at one (n, batch); ``seq_len`` fixes the tokens per
    timed run (default: :func:`tokens_for`)."""
    backward = IMPLS[impl]
    tokens = seq_len or tokens_for(n_qubits, batch, quick)
    psi0, phases, w, weights = make_inputs(n_qubits, batch, tokens)
    recs = []
    for mode in modes:
        if mode == "train":
            ph = phases.clone().requires_grad_()
            wl = w.clone().requires_grad_()

            def run(ph=ph, wl=wl):
                ph.grad = wl.grad = None
                _, last = scan(psi0, ph, wl, backward=backward)
                ((last[:, 0, 0].square() + last[:, 0, 1].square()) @ weights).sum().backward()
        else:
            def run():
                with torch.no_grad():
                    scan(psi0, phases, w, backward=backward)

        best, reps = _best(run, repeats, REPEAT_SECONDS[quick])
        flops = flops_per_token(n_qubits, mode) * batch * tokens
        recs.append({"impl": impl, "mode": mode, "n_qubits": n_qubits, "batch": batch,
                     "seq_len": tokens, "flops": flops, "seconds": best, "repeats": reps,
                     "flops_per_s": flops / best, "tokens_per_s": batch * tokens / best})
    return recs


def run_benchmark(n_list=range(6, 13), batches=(128,), *, quick: bool = False,
                  impls=("kernel", "pytorch"), modes=("train", "forward"),
                  gemm_sizes=None, repeats: int | None = None, seq_len: int | None = None,
                  log: Callable[[str], None] | None = None) -> tuple[list[dict], dict]:
    """Records per (impl, mode, batch, n) with ``flops_per_s`` and ``pct_of_gemm``, and the
    GEMM reference ``{"gemm": {size: flops_per_s}, "gemm_flops_per_s": best}``."""
    bad = [i for i in impls if i not in IMPLS]
    if bad:
        raise ValueError(f"unknown implementation(s) {bad}; choose from {', '.join(IMPLS)}")
    impls = without_kernel(impls, "kernel", log)
    reps = repeats if repeats is not None else (2 if quick else 3)
    sizes = list(gemm_sizes or ((1024, 2048) if quick else (1024, 2048, 4096)))
    gemm = {m: gemm_flops(m, repeats=reps + 1, seconds=REPEAT_SECONDS[quick]) for m in sizes}
    peak = max(gemm.values())
    if log:
        log("  GEMM fp32: " + ", ".join(f"{m}: {g / 1e9:,.1f} GFLOP/s" for m, g in gemm.items()))
    records = []
    for batch, n in ((b, n) for b in batches for n in n_list):
        shape = gemm_flops(batch, 2 * 2**n, 2 * 2**n, repeats=reps, seconds=REPEAT_SECONDS[quick])
        for impl in impls:
            for rec in measure(impl, n, batch, quick=quick, repeats=reps, modes=modes,
                               seq_len=seq_len):
                rec["gemm_flops_per_s"] = peak
                rec["pct_of_gemm"] = 100.0 * rec["flops_per_s"] / peak
                rec["gemm_shape_flops_per_s"] = shape
                rec["threads"] = torch.get_num_threads()
                records.append(rec)
                if log:
                    log(f"  {impl:<8} {rec['mode']:<8} n={n:<2} batch={batch:<4}: "
                        f"{rec['flops_per_s'] / 1e9:8.1f} "
                        f"GFLOP/s = {rec['pct_of_gemm']:5.1f}% of GEMM ({rec['seq_len']} tokens, "
                        f"{rec['seconds']:.2f} s)")
    return records, {"gemm": {str(m): g for m, g in gemm.items()}, "gemm_flops_per_s": peak}


def markdown_table(records: list[dict]) -> str:
    head = ["impl", "pass", "n", "batch", "tokens", "GFLOP/s", "% of GEMM",
            "GEMM at this shape (GFLOP/s)"]
    rows = [[r["impl"], r["mode"], r["n_qubits"], r["batch"], r["seq_len"],
             f"{r['flops_per_s'] / 1e9:,.1f}", f"{r['pct_of_gemm']:.1f}",
             f"{r['gemm_shape_flops_per_s'] / 1e9:,.1f}"] for r in records]
    return common_table(head, rows, left=2)


def speedups(records: list[dict]) -> dict[tuple[int, int], float]:
    """Training tokens/s of the kernel over the pure-PyTorch path, per (n, batch)."""
    rate = {(r["impl"], r["n_qubits"], r["batch"]): r["tokens_per_s"]
            for r in records if r["mode"] == "train"}
    return {(n, b): v / rate["pytorch", n, b] for (impl, n, b), v in rate.items()
            if impl == "kernel" and ("pytorch", n, b) in rate}


def summary(records: list[dict], extra: dict | None = None, target: float = 70.0,
            target_speedup: float = 5.0) -> list[str]:
    out = []
    if extra:
        out.append(f"reference: fp32 GEMM {extra['gemm_flops_per_s'] / 1e9:,.1f} GFLOP/s "
                   f"(torch.mm, best of sizes {', '.join(extra['gemm'])})")
    for impl in dict.fromkeys(r["impl"] for r in records):
        rs = [r for r in records if r["impl"] == impl and r["mode"] == "train"]
        if not rs:
            continue
        parts = ", ".join(f"n={r['n_qubits']} B={r['batch']} {r['pct_of_gemm']:.0f}%" for r in rs)
        out.append(f"{impl} (train): {parts}")
        big = [r["pct_of_gemm"] for r in rs if r["n_qubits"] >= 8]
        if impl == "kernel" and big:
            low = min(big)
            verdict = ("met" if low >= target
                       else f"missed: lowest {low:.0f}% ({target - low:.0f} points short)")
            out.append(f"kernel at n >= 8: {statistics.fmean(big):.0f}% of GEMM on average "
                       f"(target {target:.0f}%: {verdict})")
    ups = speedups(records)
    if ups:
        out.append("kernel / pytorch, training tokens/s: " + ", ".join(
            f"n={n} B={b} {v:.1f}x" for (n, b), v in sorted(ups.items())))
        small = {k: v for k, v in ups.items() if 4 <= k[0] <= 6}
        if small:
            low = min(small.values())
            verdict = "met" if low >= target_speedup else f"missed: lowest {low:.1f}x"
            where = ", ".join(f"n={n} B={b}" for n, b in sorted(small))
            out.append(f"kernel / pytorch at n = 4..6 (measured here: {where}): target "
                       f"{target_speedup:.0f}x: {verdict}")
    return out


def plot(records: list[dict], path) -> None:
    from qlam.bench.common import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    batches = sorted({r["batch"] for r in records})
    for impl in dict.fromkeys(r["impl"] for r in records):
        for mode, style in (("train", "-o"), ("forward", "--s")):
            for b in batches:
                rs = sorted((r for r in records
                             if r["impl"] == impl and r["mode"] == mode and r["batch"] == b),
                            key=lambda r: r["n_qubits"])
                if rs:
                    label = f"{impl} {mode}" + (f" B={b}" if len(batches) > 1 else "")
                    ax.plot([r["n_qubits"] for r in rs], [r["pct_of_gemm"] for r in rs], style,
                            label=label)
    shape = {}
    for r in records:  # at the largest batch
        if r["batch"] == batches[-1]:
            shape[r["n_qubits"]] = 100.0 * r["gemm_shape_flops_per_s"] / r["gemm_flops_per_s"]
    if shape:
        ks = sorted(shape)
        ax.plot(ks, [shape[k] for k in ks], "k:", label="torch.mm at the recurrence's shape")
    ax.axhline(100, color="grey", lw=0.8)
    ax.set(xlabel="qubits n", ylabel="% of fp32 GEMM FLOP/s (nominal 8 N^2 per matvec)",
           title="recurrence FLOP/s against the machine's GEMM")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)
