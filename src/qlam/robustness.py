"""How a trained QLAM model's test accuracy holds up under hardware conditions.

``qlam robustness`` evaluates one checkpoint exactly, then with every shot count (each
token's readout of every head estimated from N Born-rule samples, as ``qlam eval --shots``)
and under every noise setting (the channel on every qubit after every token's circuit, one
quantum trajectory per test example, as ``qlam eval --noise``; see :mod:`qlam.sim.noise`).
Every setting starts its sampler from the same ``seed``, so each row is reproducible alone.

With ``backend`` (a fake IBM backend, :mod:`qlam.hardware`) one more row evaluates every
QLAM layer under that backend's noise model: the token circuits transpiled for it and run
as noisy density matrices in Qiskit Aer (kind "backend"; a few examples of short
sequences: each head of each example is one simulation).

Writes, in ``--out``:

* ``robustness.json``: the settings and a table ``rows`` of {kind, strength, shots,
  test_acc, stderr, test_loss, n_test, seconds}; kind is "exact", "shots", a channel name or
  "backend" (with key ``backend``, its name, and per token the mean total-variation distance
  of the noisy readout distributions from the noiseless ones, ``tvd``, beside that of the
  uniform distribution, ``tvd_uniform``: their ratio is how much of the readout's signal
  the noise has erased). ``stderr`` is the binomial standard error over the ``n_test``
  examples (for per-token tasks, whose accuracy counts target tokens, the tokens of one
  example are not independent: counting examples errs on the wide side).
  Rewritten after every row, and a rerun with the same settings skips the rows already
  there (so an interrupted sweep continues);
* ``robustness.md``: the same table in Markdown;
* ``robustness.png``: accuracy against shots and against noise strength (log axes), the
  exact accuracy as a dashed line, error bars the binomial standard error.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from pathlib import Path

import torch

from qlam.atomic import atomic_write_text
from qlam.config import resolve_device
from qlam.evaluate import checkpoint_task, evaluate, load_qlam
from qlam.hardware import NoisyDevice, get_backend
from qlam.memory.mixed import MixedQLAM
from qlam.sim.noise import parse_noise_sweep

DEFAULT_SHOTS = "10,100,1000"
DEFAULT_NOISE = ("depolarizing:0.0001,0.001,0.01,0.1", "amplitude_damping:0.0001,0.001,0.01,0.1",
                 "bitflip:0.0001,0.001,0.01,0.1")
NOISE_PLACEMENT = ("per token: the channel acts on every qubit after every token's circuit "
                   "(before that token's readout); state preparation and readout are noiseless; "
                   "one quantum trajectory per test example")
SHOTS_MEANING = ("every token's readout of every head is estimated from N computational-basis "
                 "samples (the Pauli-Z expectations from the empirical frequencies)")
BACKEND_MEANING = ("the backend's noise model (Qiskit Aer, from its reported gate errors and "
                   "durations) on every QLAM layer's token circuits, transpiled for it; density "
                   "matrices; each token's readout exact but for the backend's measurement "
                   "assignment error (see qlam.hardware)")


def parse_shots(spec) -> list[int]:
    """'10,100,1000' (or a list of ints) -> [10, 100, 1000]; each >= 1."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out = []
    for item in items:
        if isinstance(item, str):
            if not item.strip():
                continue
            try:
                item = int(item)
            except ValueError:
                raise ValueError(f"shots must be integers, got {item.strip()!r}") from None
        if isinstance(item, bool) or not isinstance(item, int):
            raise ValueError(f"shots must be integers, got {item!r}")
        if item < 1:
            raise ValueError(f"shots must be >= 1, got {item}")
        out.append(item)
    return out


def _key(row: dict) -> tuple:
    return row["kind"], row.get("strength"), row.get("shots"), row.get("backend")


def _settings(shots: list[int], channels, backend: str | None = None) -> list[dict]:
    rows = [{"kind": "exact", "strength": None, "shots": None}]
    rows += [{"kind": "shots", "strength": None, "shots": s} for s in shots]
    rows += [{"kind": c.kind, "strength": c.p, "shots": None, "channel": c} for c in channels]
    if backend is not None:
        rows.append({"kind": "backend", "strength": None, "shots": None, "backend": backend})
    return rows


def robustness(checkpoint, out, *, task: str | None = None, shots=DEFAULT_SHOTS,
               noise=None, limit: int | None = None, seed: int = 0,
               device: str = "auto", batch_size: int = 256, plot: bool = True,
               log=None, backend: str | None = None) -> dict:
    """Run the sweep (see the module docstring); returns the JSON record. ``noise`` None:
    :data:`DEFAULT_NOISE` for the unitary memory, none for the mixed one (its state is
    already a density matrix: it takes shots, not trajectories)."""
    log = sys.stderr if log is None else log
    shots = parse_shots(shots)
    given = noise is not None
    noise = [noise] if isinstance(noise, str) else list(DEFAULT_NOISE if noise is None else noise)
    channels = [c for spec in noise for c in parse_noise_sweep(spec)]
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    noisy_device = None
    if backend is not None:
        if limit is None:
            raise ValueError("--backend simulates density matrices per example and head: give "
                             "--limit (a few test examples)")
        noisy_device = NoisyDevice(get_backend(backend), seed=seed)
        backend = noisy_device.backend.name
    dev = resolve_device(device)
    model, ck = load_qlam(checkpoint, dev)
    if any(isinstance(m, MixedQLAM) for m in model.memories()) and channels:
        if given:
            raise ValueError("--noise applies to memory='unitary' models; this checkpoint's "
                             "memory is mixed (a density matrix): sweep --shots only")
        print("robustness: a memory='mixed' model: no noise sweep (its state is a density "
              "matrix; shots only)", file=log)
        channels = []
    cfg, data = checkpoint_task(ck, task)
    n_test = min(limit, len(data.test)) if limit else len(data.test)
    out = Path(out)
    head = {"checkpoint": str(checkpoint), "task": cfg.task, "model": ck.get("model_name"),
            "seed": seed, "limit": limit, "n_test": n_test, "noise_placement": NOISE_PLACEMENT,
            "shots_meaning": SHOTS_MEANING}
    done: dict[tuple, dict] = {}
    path = out / "robustness.json"
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError:
            old = {}
        if all(old.get(k) == v for k, v in head.items()):
            done = {_key(r): r for r in old.get("rows", [])}
    memories = model.memories()
    rows = []
    for setting in _settings(shots, channels, backend):
        channel = setting.pop("channel", None)
        if _key(setting) in done:
            rows.append(done[_key(setting)])
            continue
        gen = torch.Generator(device=dev).manual_seed(seed)
        model.set_readout(setting["shots"], channel, gen)
        t0 = time.time()
        on_backend = setting["kind"] == "backend"
        with noisy_device.attached(memories) if on_backend else contextlib.nullcontext():
            loss, acc = evaluate(model, data, "test", batch_size, dev, limit)
        row = {**setting, "test_acc": acc, "stderr": math.sqrt(acc * (1 - acc) / max(n_test, 1)),
               "test_loss": loss, "n_test": n_test, "seconds": round(time.time() - t0, 2)}
        if on_backend:  # how far each token's readout moved, against what full decoherence moves
            row.update(noisy_device.token_distances())
        rows.append(row)
        label = _label(row)
        print(f"robustness: {label:<28} test accuracy {acc:.4f}  ({row['seconds']:.1f} s)",
              file=log)
        _write(out, head, rows, done)
    model.set_readout()
    record = _write(out, head, rows, done)
    if plot:
        from qlam.plots import drawn

        drawn(plot_robustness, record, out / "robustness.png",
              note=lambda line: print(line, file=log))
    return record


def _label(row: dict) -> str:
    if row["kind"] == "exact":
        return "exact"
    if row["kind"] == "shots":
        return f"{row['shots']} shots"
    if row["kind"] == "backend":
        return f"{row['backend']} noise model"
    return f"{row['kind']}:{row['strength']:g}"


def _write(out: Path, head: dict, rows: list[dict], done: dict) -> dict:
    keys = {_key(r) for r in rows}
    extra = [r for k, r in done.items() if k not in keys]  # earlier rows not in this sweep
    record = {**head, "rows": rows + extra}
    atomic_write_text(out / "robustness.json", json.dumps(record, indent=2))
    lines = [f"Test accuracy of `{head['checkpoint']}` on {head['task']} "
             f"({head['n_test']} test examples, seed {head['seed']}).", "",
             "| setting | kind | strength / shots | test accuracy (%) | ± (std. error) |",
             "|---|---|---|---|---|"]
    for r in record["rows"]:
        value = r["shots"] if r["kind"] == "shots" else (
            "" if r["strength"] is None else f"{r['strength']:g}")
        lines.append(f"| {_label(r)} | {r['kind']} | {value} | {100 * r['test_acc']:.2f} | "
                     f"{100 * r['stderr']:.2f} |")
    lines += ["", f"Noise: {NOISE_PLACEMENT}.", f"Shots: {SHOTS_MEANING}.", ""]
    if any(r["kind"] == "backend" for r in record["rows"]):
        lines.insert(-1, f"Backend: {BACKEND_MEANING}.")
    atomic_write_text(out / "robustness.md", "\n".join(lines))
    return record


def plot_robustness(record: dict, png) -> Path:
    """Accuracy against shots (left) and noise strength per channel (right)."""
    from qlam.plots import pyplot, save_figure

    plt = pyplot()
    rows = record["rows"]
    exact = [r for r in rows if r["kind"] == "exact"]
    fig, (ax_s, ax_n) = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    shot_rows = sorted((r for r in rows if r["kind"] == "shots"), key=lambda r: r["shots"])
    if shot_rows:
        ax_s.errorbar([r["shots"] for r in shot_rows], [100 * r["test_acc"] for r in shot_rows],
                      yerr=[100 * r["stderr"] for r in shot_rows], fmt="-o", capsize=3,
                      label="shots per token")
    kinds = sorted({r["kind"] for r in rows} - {"exact", "shots", "backend"})
    for kind in kinds:
        rs = sorted((r for r in rows if r["kind"] == kind and r["strength"] > 0),
                    key=lambda r: r["strength"])
        if rs:
            ax_n.errorbar([r["strength"] for r in rs], [100 * r["test_acc"] for r in rs],
                          yerr=[100 * r["stderr"] for r in rs], fmt="-o", capsize=3, label=kind)
    for r in (r for r in rows if r["kind"] == "backend"):
        ax_n.axhline(100 * r["test_acc"], ls=":", color="black", label=_label(r))
    for ax in (ax_s, ax_n):
        if exact:
            ax.axhline(100 * exact[0]["test_acc"], ls="--", color="grey", label="exact")
        ax.set_xscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    ax_s.set(xlabel="measurement shots per token", ylabel="test accuracy (%)",
             title="finite shots")
    ax_n.set(xlabel="channel strength (after every token, every qubit)",
             title="noise (quantum trajectories)")
    fig.suptitle(f"{record.get('model')} on {record['task']}: {record['n_test']} test examples",
                 fontsize=10)
    return save_figure(fig, png)


__all__ = ["robustness", "plot_robustness", "parse_shots", "DEFAULT_SHOTS", "DEFAULT_NOISE"]
