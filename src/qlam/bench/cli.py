"""`qlam bench sim [--quick] [--json FILE] [--n ...] [--batch ...] [--seq-len ...]`."""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch


def register(subparsers) -> None:
    bench = subparsers.add_parser("bench", help="benchmarks")
    sub = bench.add_subparsers(dest="bench_command", required=True, metavar="BENCH")
    p = sub.add_parser(
        "sim", help="training tokens/s of a QLAM-style recurrence, qlam vs PennyLane",
        description="Forward + backward tokens/s of a recurrence whose token circuit is "
                    "RZ(x_t) on every qubit, a trainable RY/RZ layer and a CNOT ring.")
    p.add_argument("--quick", action="store_true",
                   help="fewer repeats and short sequences for the slow implementations "
                        "(under two minutes)")
    p.add_argument("--json", metavar="FILE", help="write the records as a JSON list")
    p.add_argument("--n", type=int, nargs="+", default=[4, 6, 8], metavar="N",
                   help="qubit counts (default: 4 6 8)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seq-len", type=int, default=784,
                   help="tokens per sequence (slow implementations run a prefix)")
    p.add_argument("--impl", nargs="+", metavar="NAME",
                   help="implementations to run (default: all available)")
    p.add_argument("--repeats", type=int, help="timed runs per row (best is reported)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--threads", type=int, help="torch.set_num_threads")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=run_sim)


def run_sim(args: argparse.Namespace) -> int:
    from qlam.bench import sim

    if args.batch < 1 or args.seq_len < 1 or any(n < 1 for n in args.n):
        raise ValueError("--batch, --seq-len and --n must be >= 1")
    if any(n > 12 for n in args.n):
        raise ValueError("--n above 12 needs a 2^n x 2^n dense unitary per token; use n <= 12")
    if args.repeats is not None and args.repeats < 1:
        raise ValueError("--repeats must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    log(f"qlam bench sim: n={args.n}, batch={args.batch}, seq_len={args.seq_len}, "
        f"{args.dtype}, {torch.get_num_threads()} threads{', quick' if args.quick else ''}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load > (os.cpu_count() or 1):
        log(f"warning: load average {load:.1f} exceeds {os.cpu_count()} CPUs; timings are "
            f"unreliable (multi-threaded GEMMs suffer most; --threads 1 is steadier)")
    records = sim.run_benchmark(args.n, args.batch, args.seq_len, quick=args.quick,
                                impls=args.impl, repeats=args.repeats, dtype=dtype, log=log)
    print(sim.markdown_table(records))
    print()
    for n in args.n:
        ratios = [(name, sim.ratio(records, name, n)) for name in sim.IMPLS
                  if name.startswith("qlam-compiled")]
        ratios = [f"{name} {r:,.1f}x" for name, r in ratios if r is not None]
        if ratios:
            print(f"n={n}: " + ", ".join(ratios) + f" {sim.BASELINE} (training tokens/s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=2)
            f.write("\n")
        log(f"wrote {args.json}")
    return 0
