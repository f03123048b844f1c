"""`qlam bench stream`: the cost of streaming a QLAM layer token by token with ``step()``
(inference, ``torch.no_grad()``), against a token inside one ``forward`` over the sequence,
``step()`` rebuilding the heads' unitaries on every call (the behaviour before they were
cached), the mixed memory (``MixedQLAM``, same heads and qubits) streamed and in one forward,
and an ``nn.LSTMCell`` of the same width.

Each row: microseconds per token, and per example-token (divided by the batch), the best of
``repeats`` timed passes over ``tokens`` tokens.
"""

from __future__ import annotations

import time

import torch

from qlam.memory.layer import QLAM
from qlam.memory.mixed import MixedQLAM

ROWS = ("forward", "step", "step-rebuild", "mixed-forward", "mixed-step", "lstm-cell")


def _best(fn, repeats: int) -> float:
    fn()  # warm-up: kernel build, allocator, caches
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def run_benchmark(tokens: int = 300, batch: int = 1, d_model: int = 64, heads: int = 8,
                  qubits: int = 4, repeats: int = 5, log=None) -> list[dict]:
    torch.manual_seed(0)
    layer = QLAM(d_model, n_heads=heads, n_qubits=qubits).eval()
    mixed = MixedQLAM(d_model, n_heads=heads, n_qubits=qubits).eval()
    cell = torch.nn.LSTMCell(d_model, d_model).eval()
    x = torch.randn(batch, tokens, d_model)

    def stream(memory, rebuild: bool = False):
        state = None
        for t in range(tokens):
            if rebuild:
                memory._cache = None
            _, state = memory.step(x[:, t], state)

    def lstm():
        h = None
        for t in range(tokens):
            h = cell(x[:, t], h)

    runs = {"forward": lambda: layer(x), "step": lambda: stream(layer),
            "step-rebuild": lambda: stream(layer, rebuild=True),
            "mixed-forward": lambda: mixed(x), "mixed-step": lambda: stream(mixed),
            "lstm-cell": lstm}
    records = []
    with torch.no_grad():
        for name in ROWS:
            seconds = _best(runs[name], repeats)
            us = 1e6 * seconds / tokens
            rec = {"row": name, "tokens": tokens, "batch": batch, "d_model": d_model,
                   "heads": heads, "qubits": qubits, "us_per_token": us,
                   "us_per_example_token": us / batch, "threads": torch.get_num_threads()}
            records.append(rec)
            if log:
                log(f"stream {name}: {us:.1f} us/token")
    return records


def markdown_table(records: list[dict]) -> str:
    ref = {r["row"]: r["us_per_token"] for r in records}.get("forward")
    lines = ["| row | µs per token | µs per example-token | ÷ forward |", "|---|---:|---:|---:|"]
    for r in records:
        ratio = f"{r['us_per_token'] / ref:.1f}x" if ref else ""
        per_example = r.get("us_per_example_token", r["us_per_token"] / r["batch"])
        lines.append(f"| {r['row']} | {r['us_per_token']:.1f} | {per_example:.2f} | {ratio} |")
    return "\n".join(lines)


def summary(records: list[dict]) -> list[str]:
    us = {r["row"]: r["us_per_token"] for r in records}
    if not records:
        return []
    r = records[0]
    out = [f"QLAM d_model {r['d_model']}, {r['heads']} heads x {r['qubits']} qubits, batch "
           f"{r['batch']}, {r['tokens']} tokens, {r['threads']} thread(s), torch.no_grad()"]
    if "step" in us and "forward" in us:
        out.append(f"step() costs {us['step'] / us['forward']:.1f}x a token inside forward"
                   + (f" ({us['step-rebuild'] / us['step']:.0f}x faster than rebuilding the "
                      f"unitaries every step)" if "step-rebuild" in us else ""))
    if "step" in us and "lstm-cell" in us:
        out.append(f"step() costs {us['step'] / us['lstm-cell']:.2f}x an LSTMCell step")
    if "mixed-step" in us and "mixed-forward" in us:
        out.append(f"the mixed memory's step() costs {us['mixed-step'] / us['mixed-forward']:.1f}x"
                   f" a token inside its forward")
    return out


def plot(records: list[dict], path) -> None:
    from qlam.bench.common import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar([r["row"] for r in records], [r["us_per_token"] for r in records])
    ax.set_ylabel("µs per token")
    ax.set_yscale("log")
    ax.set_title("streaming one token at a time (no_grad)")
    save_figure(fig, path)
