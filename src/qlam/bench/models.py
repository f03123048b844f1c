"""Model benchmark: training and inference tokens/s of QLAM against the baselines at equal
parameter count.

QLAM is built with its default configuration (or the one given), and every baseline's
``d_model`` is sized with :func:`qlam.models.size_to_budget` to QLAM's parameter count
(the other options at their defaults). The task shape is sequential MNIST's: one feature
per token, ten classes; the inputs are random (speed does not depend on the values).

QLAM appears twice, as two implementations of the same model: ``qlam-kernel`` (the compiled
C++ recurrence, forward and reversible backward, ``backward="kernel"``) and
``qlam-reversible`` (the pure-PyTorch fast path, ``backward="reversible"``). ``qlam-mixed``
is the mixed (density-matrix) memory, sized like the baselines (8 heads x 3 qubits).

- ``train``: one optimiser step: forward, cross-entropy, backward, AdamW update;
  tokens/s = batch * seq_len / seconds;
- ``infer``: forward under ``torch.inference_mode()`` in eval mode.

``precisions`` ("fp32", "bf16"): with "bf16" the forward runs under bfloat16 autocast (as
``qlam train --precision bf16``), a row of its own named ``MODEL bf16``; ``compile``: each
model also ``torch.compile``d (as ``qlam train --compile``; rows ``MODEL compiled`` next to
the eager ones), the compile happening in the untimed warm-up run (its wall time in
``warmup_s``).

The command (``qlam bench models``) times steps under ``qlam train``'s allocator policy
(:mod:`qlam.allocator`: freed activations stay in the process instead of being mapped and
page-faulted in anew every step), recorded as ``meta["malloc_mmap_threshold"]``.

Each timing is the best of ``repeats`` runs after one warm-up run at the same length
(``--quick``: one run after a warm-up on a quarter of the length, so first-touch page
faults of the largest buffers land in the timing: quick rates are a little pessimistic;
compiled rows warm up at the full length even then, so no recompilation is timed).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from qlam.bench.common import markdown_table as common_table
from qlam.bench.common import synchronize, without_kernel
from qlam.config import PRECISIONS, precision_context
from qlam.models import build_model, count_params, size_to_budget

ROWS = ("qlam-kernel", "qlam-reversible", "qlam-mixed", "lstm", "gru", "transformer", "ssm")
QLAM_BACKWARD = {"qlam-kernel": "kernel", "qlam-reversible": "reversible"}
N_FEATURES, N_CLASSES = 1, 10


def build(row: str, qlam_options: dict, target_params: int | None = None):
    """The model of a row; baselines sized to ``target_params``."""
    if row in QLAM_BACKWARD:
        model = build_model("qlam", N_FEATURES, N_CLASSES, **qlam_options)
        for memory in model.memories():
            memory.backward_mode = QLAM_BACKWARD[row]
        return model
    if target_params is None:
        raise ValueError("baselines need target_params")
    d_model = size_to_budget(row, N_FEATURES, N_CLASSES, target_params)
    return build_model(row, N_FEATURES, N_CLASSES, d_model=d_model)


def _d_model(model) -> int | None:
    embed = getattr(model, "embed", None)
    return embed.out_features if embed is not None else None


def _time(fn: Callable[[], None], repeats: int) -> tuple[float, int]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), len(times)


def measure(model, seq_len: int, batch: int, *, quick: bool, repeats: int,
            modes=("train", "infer"), seed: int = 0, precision: str = "fp32",
            device: str = "cpu", compiled: bool = False) -> list[dict]:
    """Records of ``model`` (already on ``device``) per mode; each run between two device
    synchronisations on CUDA. ``compiled``: the model is ``torch.compile``d, so the warm-up
    runs at ``seq_len`` even when ``quick`` (a new shape would recompile in the timing)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, seq_len, N_FEATURES, generator=g).to(device)
    y = torch.randint(N_CLASSES, (batch,), generator=g).to(device)
    warm = x[:, : max(1, seq_len // 4)] if quick and not compiled else x
    out = []

    def forward(inp):
        with precision_context(precision, x.device.type):
            return model(inp)

    def synced(run):
        def timed(*args):
            run(*args)
            synchronize(device)
        return timed

    for mode in modes:
        if mode == "train":
            model.train()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

            def run(inp=x, opt=opt):
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(forward(inp).float(), y).backward()
                opt.step()
        elif mode == "infer":
            model.eval()

            def run(inp=x):
                with torch.inference_mode():
                    forward(inp)
        else:
            raise ValueError(f"mode must be 'train' or 'infer', got {mode!r}")
        run = synced(run)
        t0 = time.perf_counter()
        run(warm)
        warmup = time.perf_counter() - t0
        best, reps = _time(run, repeats)
        out.append({"mode": mode, "seq_len": seq_len, "batch": batch, "precision": precision,
                    "seconds": best, "warmup_s": warmup,
                    "repeats": reps, "tokens_per_s": batch * seq_len / best})
    return out


def run_benchmark(lengths=(784, 4096), *, batch: int = 32, quick: bool = False,
                  rows=ROWS, qlam_options: dict | None = None, repeats: int | None = None,
                  modes=("train", "infer"), log: Callable[[str], None] | None = None,
                  precisions=("fp32",), compile: bool = False,
                  device: str = "cpu") -> list[dict]:
    """Records of every row (models built on the CPU from one seed, then moved to
    ``device``; on CUDA, ``qlam-kernel``'s compiled engine is the Triton one)."""
    bad = [r for r in rows if r not in ROWS]
    if not precisions or any(p not in PRECISIONS for p in precisions):
        raise ValueError(f"precisions must be among {', '.join(PRECISIONS)}, got {precisions}")
    if bad:
        raise ValueError(f"unknown model row(s) {bad}; choose from {', '.join(ROWS)}")
    if torch.device(device).type == "cpu":
        rows = without_kernel(rows, "qlam-kernel", log)
    qlam_options = dict(qlam_options or {})
    reps = repeats if repeats is not None else (1 if quick else 2)
    torch.manual_seed(0)
    target = count_params(build("qlam-reversible", qlam_options))
    models = {}
    for row in rows:
        torch.manual_seed(0)
        models[row] = build(row, qlam_options, target).to(device)
    records = []
    for length in lengths:
        for row, model in models.items():
            for precision, compiled in itertools.product(precisions, (False, True)[:1 + compile]):
                name = row if precision == "fp32" else f"{row} {precision}"
                name += " compiled" if compiled else ""
                run_model = torch.compile(model) if compiled else model
                for rec in measure(run_model, length, batch, quick=quick, repeats=reps,
                                   modes=modes, precision=precision, device=device,
                                   compiled=compiled):
                    rec.update(model=name, impl=row, arch="qlam" if row in QLAM_BACKWARD else row,
                               backward=QLAM_BACKWARD.get(row), n_params=count_params(model),
                               d_model=_d_model(model), target_params=target,
                               threads=torch.get_num_threads(), compiled=compiled,
                               device=torch.device(device).type)
                    records.append(rec)
                    if log:
                        log(f"  {name:<21} L={length:<5} {rec['mode']:<5}: "
                            f"{rec['tokens_per_s']:>12,.0f} tokens/s ({rec['n_params']:,} "
                            f"params, {rec['seconds']:.2f} s)")
    return records


def markdown_table(records: list[dict]) -> str:
    """One row per model; tokens/s per (length, pass); ``x qlam-kernel`` ratios of training."""
    lengths = sorted({r["seq_len"] for r in records})
    modes = [m for m in ("train", "infer") if any(r["mode"] == m for r in records)]
    rate = {(r["model"], r["seq_len"], r["mode"]): r["tokens_per_s"] for r in records}
    ref = next((m for m in ("qlam-kernel", "qlam-reversible") if any(
        r["model"] == m for r in records)), None)
    head = ["model", "params", "d_model"]
    head += [f"{m} tok/s @{L}" for L in lengths for m in modes]
    if ref and "train" in modes:
        head += [f"train ÷ {ref} @{L}" for L in lengths]
    rows = []
    for model in dict.fromkeys(r["model"] for r in records):
        r0 = next(r for r in records if r["model"] == model)
        cells = [model, f"{r0['n_params']:,}", str(r0["d_model"])]
        for L in lengths:
            for m in modes:
                v = rate.get((model, L, m))
                cells.append("-" if v is None else f"{v:,.0f}")
        if ref and "train" in modes:
            for L in lengths:
                a, b = rate.get((model, L, "train")), rate.get((ref, L, "train"))
                cells.append("-" if a is None or b is None else f"{a / b:.2f}")
        rows.append(cells)
    return common_table(head, rows)


def summary(records: list[dict]) -> list[str]:
    out = []
    if records:
        r = records[0]
        out.append(f"batch {r['batch']}, equal parameter count ~{r['target_params']:,} "
                   f"(QLAM's), {r['threads']} thread(s)")
    rate = {(r["model"], r["seq_len"], r["mode"]): r["tokens_per_s"] for r in records}
    for L in sorted({r["seq_len"] for r in records}):
        k, p = rate.get(("qlam-kernel", L, "train")), rate.get(("qlam-reversible", L, "train"))
        if k and p:
            out.append(f"L={L}: qlam-kernel trains {k / p:.1f}x the pure-PyTorch path")
        # each QLAM row against the plain LSTM and, where another LSTM row is faster, its best
        lstms = {m: v for (m, n, mode), v in rate.items()
                 if n == L and mode == "train" and m.startswith("lstm")}
        bases = [b for b in ("lstm", max(lstms, key=lstms.get, default=None)) if b in lstms]
        for q in dict.fromkeys(r["model"] for r in records):
            a = rate.get((q, L, "train"))
            if not q.startswith("qlam-kernel") or not a:
                continue
            for base in dict.fromkeys(bases):
                out.append(f"L={L}: {q} trains at {a / lstms[base]:.2f}x the {base} tokens/s")
    return out


def plot(records: list[dict], path) -> None:
    from qlam.bench.common import pyplot, save_figure

    plt = pyplot()
    lengths = sorted({r["seq_len"] for r in records})
    models = list(dict.fromkeys(r["model"] for r in records))
    rate = {(r["model"], r["seq_len"], r["mode"]): r["tokens_per_s"] for r in records}
    fig, axes = plt.subplots(1, len(lengths), figsize=(6 * len(lengths), 4.2), squeeze=False)
    width = 0.4
    for ax, L in zip(axes[0], lengths):
        for j, mode in enumerate(("train", "infer")):
            xs = [i + (j - 0.5) * width for i in range(len(models))]
            ax.bar(xs, [rate.get((m, L, mode), 0) for m in models], width, label=mode)
        ax.set_xticks(range(len(models)))
        ax.set_xticklabels(models, rotation=30, ha="right", fontsize=8)
        ax.set(ylabel="tokens/s", yscale="log", title=f"sequence length {L}")
        ax.grid(alpha=0.3, axis="y", which="both")
        ax.legend(fontsize=8)
    save_figure(fig, path)
