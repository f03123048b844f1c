"""`qlam bench sim | memory | roofline | models | circuits | stream | all | report`.

Every benchmark prints a markdown table and a few summary lines (stdout; progress goes to
stderr) and takes ``--quick`` (under two minutes on a quiet 2-core machine), ``--json FILE``
(``{"benchmark", "meta", "records"}``, see :mod:`qlam.bench.common`), ``--plot FILE`` (PNG)
and ``--threads N``. ``all`` runs the four and writes ``{sim,memory,roofline,models}.json``
and ``.png`` and a ``README.md`` summary into ``--out``; ``report DIR`` rewrites that README
from the JSON files found in DIR.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from qlam.allocator import keep_freed_memory
from qlam.atomic import atomic_write_text
from qlam.bench import common, models, roofline, rss, sim
from qlam.config import resolve_device, set_threads

BENCHMARKS = ("sim", "memory", "roofline", "models")
TITLES = {
    "sim": "Simulator: training tokens/s of the QLAM-style circuit, qlam vs peers",
    "memory": "Memory: peak memory of a QLAM training step against length",
    "roofline": "Roofline: recurrence FLOP/s against fp32 GEMM",
    "models": "Models: tokens/s at equal parameter count",
}


def _common_args(p: argparse.ArgumentParser, threads_default=None) -> None:
    p.add_argument("--quick", action="store_true", help="small sizes: under two minutes")
    p.add_argument("--json", metavar="FILE", help="write metadata and records as JSON")
    p.add_argument("--plot", metavar="FILE", help="write a PNG figure (needs matplotlib)")
    p.add_argument("--threads", type=int, default=threads_default,
                   help="torch.set_num_threads" + (f" (default {threads_default})"
                                                   if threads_default else ""))
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def register(subparsers) -> None:
    bench = subparsers.add_parser("bench", help="benchmarks")
    sub = bench.add_subparsers(dest="bench_command", required=True, metavar="BENCH")

    p = sub.add_parser(
        "sim", help="training tokens/s of a QLAM-style recurrence, qlam vs PennyLane / Aer",
        description="Forward + backward tokens/s of a recurrence whose token circuit is "
                    "RZ(x_t) on every qubit, a trainable RY/RZ layer and a CNOT ring, in qlam "
                    "and in the peers installed here (qiskit-aer-forward: forward only).")
    _common_args(p)
    p.add_argument("--n", type=int, nargs="+", metavar="N",
                   help="qubit counts (default: 2 4 6 8 10 12; quick: 2 4 6 8)")
    p.add_argument("--batch", type=int, nargs="+", metavar="B",
                   help="batch sizes (default: 1 128)")
    p.add_argument("--seq-len", type=int, default=784,
                   help="tokens per sequence (slow implementations and large n run a prefix)")
    p.add_argument("--impl", nargs="+", metavar="NAME",
                   help="implementations to run (default: all available)")
    p.add_argument("--repeats", type=int, help="timed runs per row (best is reported)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--large", type=int, nargs=2, metavar=("BATCH", "LEN"),
                   help=f"from n = {sim.LARGE_N} on, run this batch and sequence length instead "
                        "(one batch for those sizes)")
    p.add_argument("--peers-md", metavar="FILE",
                   help="also write the side-by-side table (one column per implementation)")
    p.add_argument("--device", default="cpu",
                   help="cpu (default), cuda or cuda:N: the rows that run on that device")
    p.set_defaults(func=run_sim)

    p = sub.add_parser(
        "memory", help="peak memory of a QLAM training step against sequence length",
        description="Peak RSS of one training step of a QLAM layer (final-state loss), each "
                    "measurement in a fresh process, for the kernel, reversible and autograd "
                    "backwards; see qlam.bench.rss.")
    _common_args(p, threads_default=1)
    p.add_argument("--lengths", type=int, nargs="+", metavar="L",
                   help="sequence lengths (default: 256 512 ... 16384; quick: 256 1024 4096 16384)")
    p.add_argument("--backward", nargs="+", choices=["kernel", "reversible", "autograd"],
                   help="backwards to measure (default: all three)")
    p.add_argument("--batch", type=int, help="default 4 (quick: 2)")
    p.add_argument("--n-qubits", type=int, help="default 6 (quick: 5)")
    p.add_argument("--heads", type=int, help="default 2")
    p.add_argument("--d-model", type=int, help="default 32")
    p.add_argument("--autograd-max-len", type=int,
                   help="longest autograd run (default 16384, quick 4096; also stopped when the "
                        "predicted peak exceeds half the available memory)")
    p.add_argument("--no-floor", action="store_true",
                   help="skip the floor measurement (no recurrence_bytes)")
    p.add_argument("--task", help="a generated task (e.g. parity-running): measure a one-layer "
                                  "QLAMClassifier's training step on its data and loss instead "
                                  "of the bare layer's")
    p.set_defaults(func=run_memory)

    p = sub.add_parser(
        "roofline", help="recurrence FLOP/s against the measured fp32 GEMM FLOP/s",
        description="Achieved FLOP/s of the recurrence (kernel and pure-PyTorch path; nominal "
                    "8 N^2 flops per complex matvec) as a percentage of torch.mm's.")
    _common_args(p)
    p.add_argument("--n", type=int, nargs="+", metavar="N",
                   help="qubit counts (default: 6 7 ... 12; quick: 6 8 10 12)")
    p.add_argument("--batch", type=int, nargs="+", metavar="B", help="default 128 (quick: 64)")
    p.add_argument("--seq-len", type=int,
                   help="tokens per timed run (default: by a work budget, 8 to 1024)")
    p.add_argument("--impl", nargs="+", choices=["kernel", "pytorch"])
    p.add_argument("--modes", nargs="+", choices=["train", "forward"])
    p.add_argument("--gemm-sizes", type=int, nargs="+", metavar="M",
                   help="square GEMM sizes (default: 1024 2048 4096; quick: 1024 2048)")
    p.add_argument("--repeats", type=int)
    p.set_defaults(func=run_roofline)

    p = sub.add_parser(
        "models", help="training/inference tokens/s of QLAM vs baselines at equal size",
        description="QLAM (kernel and pure-PyTorch recurrence) against LSTM, GRU, Transformer "
                    "and SSM sized to QLAM's parameter count, under qlam train's allocator "
                    "policy (freed memory kept in the process; QLAM_KEEP_MEMORY=0: off).")
    _common_args(p)
    p.add_argument("--lengths", type=int, nargs="+", metavar="L", help="default: 784 4096")
    p.add_argument("--batch", type=int, help="default 32 (quick: 8)")
    p.add_argument("--models", nargs="+", metavar="ROW",
                   help="rows: qlam-kernel qlam-reversible lstm gru transformer ssm (default all)")
    p.add_argument("--modes", nargs="+", choices=["train", "infer"])
    p.add_argument("--repeats", type=int)
    p.add_argument("--d-model", type=int, help="QLAM d_model (default: the model's)")
    p.add_argument("--n-layers", type=int, help="QLAM blocks (default: the model's)")
    p.add_argument("--heads", type=int, help="QLAM heads (default: the model's)")
    p.add_argument("--qubits", type=int, help="QLAM qubits per head (default: the model's)")
    p.add_argument("--precision", nargs="+", choices=list(models.PRECISIONS), default=["fp32"],
                   help="fp32 and/or bf16 (the forward under bfloat16 autocast, a row per "
                        "model and precision; default fp32)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile every model (the compile in the untimed warm-up)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.set_defaults(func=run_models)

    p = sub.add_parser(
        "circuits", help="seconds per statevector call of a general (Ising-like) circuit",
        description="One state through an Ising-like circuit (~480 gates at 10 qubits): "
                    "gate by gate, fully fused, and the default compiled path; see "
                    "qlam.bench.circuits.")
    p.add_argument("--json", metavar="FILE", help="write metadata and records as JSON")
    p.add_argument("--threads", type=int, help="torch.set_num_threads")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--n", type=int, nargs="+", metavar="N", help="qubit counts (default 8 10 11)")
    p.add_argument("--batch", type=int, default=1, help="states per call (default 1)")
    p.add_argument("--methods", nargs="+", choices=["reference", "fuse-all", "compiled"],
                   help="default: all three (fuse-all takes minutes at 11 qubits)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per row (best reported)")
    p.set_defaults(func=run_circuits, quick=False, plot=None)

    p = sub.add_parser(
        "stream", help="streaming cost: QLAM.step() per token against forward and an LSTMCell",
        description="Microseconds per token (and per example-token) of QLAM.step() under "
                    "torch.no_grad(), against a token inside forward, step() rebuilding its "
                    "unitaries every call, the mixed memory streamed and in forward, and an "
                    "nn.LSTMCell of the same width; see qlam.bench.stream.")
    _common_args(p)
    p.add_argument("--tokens", type=int, default=300, help="tokens streamed (default 300)")
    p.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    p.add_argument("--d-model", type=int, default=64, help="width (default 64)")
    p.add_argument("--heads", type=int, default=8, help="QLAM heads (default 8)")
    p.add_argument("--qubits", type=int, default=4, help="qubits per head (default 4)")
    p.add_argument("--repeats", type=int, default=5, help="timed passes, best kept (default 5)")
    p.set_defaults(func=run_stream)

    p = sub.add_parser(
        "all", help="run sim, memory, roofline and models; write JSON, PNG and README.md",
        description="Runs the four benchmarks (with --quick, their quick modes) and writes "
                    "OUT/{sim,memory,roofline,models}.json and .png and OUT/README.md.")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default="benchmarks/results", metavar="DIR")
    p.add_argument("--threads", type=int, help="torch threads for the timing benchmarks "
                   "(memory always uses 1)")
    p.add_argument("--only", nargs="+", choices=BENCHMARKS, help="a subset")
    p.add_argument("--debug", action="store_true")
    p.set_defaults(func=run_all)

    p = sub.add_parser("report", help="write DIR/README.md from the JSON results in DIR")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--debug", action="store_true")
    p.set_defaults(func=run_report)


# ---- shared --------------------------------------------------------------------------------
def _setup(args, name: str) -> dict:
    set_threads(args.threads)
    common.stderr_log(f"qlam bench {name}: {torch.get_num_threads()} threads"
                      + (", quick" if args.quick else ""))
    common.load_warning(common.stderr_log)
    cmd = getattr(args, "_command", None) or common.command_line(args)
    meta = common.metadata(name, cmd, quick=bool(args.quick))
    meta["equivalent_command"] = common.command_line(args)
    return meta


def _emit(args, meta: dict, records: list[dict], table: str, lines: list[str], plot) -> None:
    common.finish(meta)
    meta["summary"] = lines
    print(table)
    print()
    for line in lines:
        print(line)
    if args.json:
        common.stderr_log(f"wrote {common.write_json(args.json, meta, records)}")
    if args.plot:
        plot(records, args.plot)
        common.stderr_log(f"wrote {args.plot}")


def _positive(**values) -> None:
    for key, v in values.items():
        vs = v if isinstance(v, (list, tuple)) else [v]
        if any(x is not None and x < 1 for x in vs):
            raise ValueError(f"--{key.replace('_', '-')} must be >= 1")


# ---- sim -------------------------------------------------------------------------------------
def run_sim(args: argparse.Namespace) -> int:
    args.n = args.n or ([2, 4, 6, 8] if args.quick else [2, 4, 6, 8, 10, 12])
    args.batch = args.batch or [1, 128]
    _positive(batch=args.batch, seq_len=args.seq_len, n=args.n, repeats=args.repeats,
              large=args.large)
    if any(n > 12 for n in args.n):
        raise ValueError("--n above 12 needs a 2^n x 2^n dense unitary per token; use n <= 12")
    device = resolve_device(args.device)
    meta = _setup(args, "sim")
    meta.update(dtype=args.dtype, seq_len=args.seq_len, device=str(device),
                device_name=common.device_name(device))
    records = sim.run_benchmark(args.n, args.batch, args.seq_len, quick=args.quick,
                                impls=args.impl, repeats=args.repeats,
                                dtype=getattr(torch, args.dtype), log=common.stderr_log,
                                large=tuple(args.large) if args.large else None,
                                device=str(device), meta=meta)
    lines = sim.summary(records)
    lines += [sim.failure_line(f) for f in meta["failed"]]
    lines += [f"{name} {why}" for name, why in meta["skipped"].items()
              if why.startswith("failed to start")]
    note = sim.target_note(records)
    if note:
        lines.append(note)
    lines.append("qiskit-aer-forward is forward only (no gradients): its rate is not a training "
                 "rate, so the ratios against it favour Aer.")
    _emit(args, meta, records, sim.markdown_table(records), lines, sim.plot)
    if args.peers_md:
        text = sim.peers_table(records) + "\n\n" + "\n".join(f"- {x}" for x in lines) + "\n"
        common.stderr_log(f"wrote {atomic_write_text(args.peers_md, text)}")
    return 0


# ---- circuits --------------------------------------------------------------------------------
def run_circuits(args: argparse.Namespace) -> int:
    from qlam.bench import circuits

    args.n = args.n or [8, 10, 11]
    _positive(n=args.n, batch=args.batch, repeats=args.repeats)
    meta = _setup(args, "circuits")
    records = circuits.run_benchmark(args.n, args.batch, args.methods or circuits.METHODS,
                                     args.repeats, log=common.stderr_log)
    _emit(args, meta, records, circuits.markdown_table(records), [], None)
    return 0


# ---- memory ----------------------------------------------------------------------------------
def run_memory(args: argparse.Namespace) -> int:
    q = args.quick
    args.lengths = args.lengths or (rss.QUICK_LENGTHS if q else rss.FULL_LENGTHS)
    args.backward = args.backward or list(rss.BACKWARDS)
    args.batch = args.batch or (2 if q else 4)
    args.n_qubits = args.n_qubits or (5 if q else 6)
    args.heads = args.heads or 2
    args.d_model = args.d_model or 32
    args.autograd_max_len = args.autograd_max_len or (4096 if q else 16384)
    _positive(lengths=args.lengths, batch=args.batch, n_qubits=args.n_qubits, heads=args.heads,
              d_model=args.d_model, autograd_max_len=args.autograd_max_len)
    if args.n_qubits > 12:
        raise ValueError("--n-qubits must be <= 12")
    if args.task is not None:
        from qlam.data.generated import GENERATED_TASKS, check

        if args.task not in GENERATED_TASKS:
            raise ValueError(f"--task must be a generated task ({', '.join(GENERATED_TASKS)}), "
                             f"got {args.task!r}")
        for length in args.lengths:
            check(args.task, length, None)
    meta = _setup(args, "memory")
    meta.update(method_doc="fresh process per measurement; peak RSS (VmHWM after resetting it "
                           "via /proc/self/clear_refs, else ru_maxrss) minus RSS before the step")
    records = rss.run_benchmark(
        args.lengths, args.backward, batch=args.batch, n_qubits=args.n_qubits, heads=args.heads,
        d_model=args.d_model, threads=torch.get_num_threads(),
        autograd_max_len=args.autograd_max_len, floor=not args.no_floor, task=args.task,
        log=common.stderr_log)
    _emit(args, meta, records, rss.markdown_table(records), rss.summary(records), rss.plot)
    return 0


# ---- roofline --------------------------------------------------------------------------------
def run_roofline(args: argparse.Namespace) -> int:
    args.n = args.n or ([6, 8, 10, 12] if args.quick else list(range(6, 13)))
    args.batch = args.batch or [64 if args.quick else 128]
    args.impl = args.impl or ["kernel", "pytorch"]
    args.modes = args.modes or ["train", "forward"]
    _positive(n=args.n, batch=args.batch, gemm_sizes=args.gemm_sizes, repeats=args.repeats,
              seq_len=args.seq_len)
    if any(n > 12 for n in args.n):
        raise ValueError("--n must be <= 12")
    meta = _setup(args, "roofline")
    records, extra = roofline.run_benchmark(
        args.n, args.batch, quick=args.quick, impls=args.impl, modes=args.modes,
        gemm_sizes=args.gemm_sizes, repeats=args.repeats, seq_len=args.seq_len,
        log=common.stderr_log)
    meta.update(extra)
    meta["flop_convention"] = ("nominal 8 N^2 real flops per complex N x N matvec; forward 8 N^2, "
                               "train 32 N^2 per token and example; O(N) work not counted")
    _emit(args, meta, records, roofline.markdown_table(records),
          roofline.summary(records, extra), roofline.plot)
    return 0


# ---- models ----------------------------------------------------------------------------------
def run_models(args: argparse.Namespace) -> int:
    args.lengths = args.lengths or [784, 4096]
    args.batch = args.batch or (8 if args.quick else 32)
    args.models = args.models or list(models.ROWS)
    args.modes = args.modes or ["train", "infer"]
    _positive(lengths=args.lengths, batch=args.batch, repeats=args.repeats, d_model=args.d_model,
              n_layers=args.n_layers, heads=args.heads, qubits=args.qubits)
    device = resolve_device(args.device)
    meta = _setup(args, "models")
    meta.update(device=str(device), device_name=common.device_name(device))
    # the allocator policy of qlam train (qlam.allocator): freed activations stay in the
    # process, so steps are timed as trainings run them (None: glibc's defaults)
    keep_freed_memory()
    meta["malloc_mmap_threshold"] = os.environ.get("MALLOC_MMAP_THRESHOLD_")
    opts = {k: v for k, v in (("d_model", args.d_model), ("n_layers", args.n_layers),
                              ("n_heads", args.heads), ("n_qubits", args.qubits)) if v}
    records = models.run_benchmark(args.lengths, batch=args.batch, quick=args.quick,
                                   rows=args.models, qlam_options=opts, repeats=args.repeats,
                                   modes=args.modes, log=common.stderr_log,
                                   precisions=tuple(dict.fromkeys(args.precision)),
                                   compile=args.compile, device=str(device))
    _emit(args, meta, records, models.markdown_table(records), models.summary(records),
          models.plot)
    return 0


# ---- stream ----------------------------------------------------------------------------------
def run_stream(args: argparse.Namespace) -> int:
    from qlam.bench import stream

    if args.quick:
        args.tokens, args.repeats = min(args.tokens, 100), min(args.repeats, 3)
    _positive(tokens=args.tokens, batch=args.batch, d_model=args.d_model, heads=args.heads,
              qubits=args.qubits, repeats=args.repeats)
    meta = _setup(args, "stream")
    records = stream.run_benchmark(args.tokens, args.batch, args.d_model, args.heads,
                                   args.qubits, args.repeats, log=common.stderr_log)
    _emit(args, meta, records, stream.markdown_table(records), stream.summary(records),
          stream.plot)
    return 0


# ---- all / report ----------------------------------------------------------------------------
def run_all(args: argparse.Namespace, extra: dict[str, list[str]] | None = None) -> int:
    """Each benchmark through its own subcommand (``extra``: more arguments per benchmark,
    for tests), then OUT/README.md."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = common.command_line(args)
    parser = argparse.ArgumentParser(prog="qlam")
    register(parser.add_subparsers(dest="command", required=True))
    plots = common.plots_available()
    if not plots:
        common.stderr_log("no plots: plots need matplotlib: pip install 'qlam[plot]'")
    for name in args.only or BENCHMARKS:
        argv = ["bench", name, "--json", str(out / f"{name}.json")]
        if plots:
            argv += ["--plot", str(out / f"{name}.png")]
        if args.quick:
            argv.append("--quick")
        if args.threads and name != "memory":
            argv += ["--threads", str(args.threads)]
        argv += (extra or {}).get(name, [])
        sub_args = parser.parse_args(argv)
        sub_args._command = command
        common.stderr_log(f"== {name} ==")
        sub_args.func(sub_args)
        print()
    path = write_report(out)
    common.stderr_log(f"wrote {path}")
    return 0


def run_report(args: argparse.Namespace) -> int:
    print(f"wrote {write_report(args.dir)}")
    return 0


MODULES = {"sim": sim, "memory": rss, "roofline": roofline, "models": models}


def write_report(directory) -> Path:
    """DIR/README.md: per benchmark found in DIR, its machine and command, summary lines,
    table and figure."""
    d = Path(directory)
    found = [n for n in BENCHMARKS if (d / f"{n}.json").exists()]
    if not found:
        raise FileNotFoundError(f"no benchmark JSON ({', '.join(BENCHMARKS)}.json) in {d}")
    parts = ["# qlam benchmark results", "",
             "Written by `qlam bench all` / `qlam bench report`; the JSON files hold every "
             "record and the run's metadata. Timings taken while other work held the cores "
             "(load average above the core count) are not comparable.", ""]
    for name in found:
        meta, records = common.read_json(d / f"{name}.json")
        mod = MODULES[name]
        parts += [f"## {TITLES[name]}", ""]
        load = [meta.get("loadavg_1min_start"), meta.get("loadavg_1min_end")]
        parts.append(
            f"{meta.get('date', '?')} · {meta.get('cpu', '?')}, {meta.get('cores', '?')} cores, "
            f"{meta.get('threads', '?')} threads · torch {meta.get('torch', '?')} · "
            f"load {' -> '.join('-' if x is None else f'{x:.2f}' for x in load)}"
            + (f" · commit {meta['git_commit']}" if meta.get("git_commit") else ""))
        parts += ["", f"`{meta.get('equivalent_command') or meta.get('command', '')}`", ""]
        for line in meta.get("summary") or []:
            parts.append(f"- {line}")
        parts += ["", mod.markdown_table(records), ""]
        if (d / f"{name}.png").exists():
            parts += [f"![{name}]({name}.png)", ""]
    path = d / "README.md"
    atomic_write_text(path, "\n".join(parts))
    return path
