"""`qlam export` (one trained QLAM head's circuit for one test example, as OpenQASM 2.0 and
JSON) and `qlam robustness` (test accuracy under finite shots and noise, see
:mod:`qlam.robustness`)."""

from __future__ import annotations

from pathlib import Path

from qlam.export import export_example
from qlam.robustness import DEFAULT_NOISE, DEFAULT_SHOTS, parse_shots, robustness


def cmd_export(args) -> int:
    rec = export_example(args.checkpoint, args.out, index=args.index, task=args.task,
                         layer=args.layer, head=args.head, tokens=args.tokens, split=args.split,
                         noise=args.noise, backend=args.backend, basis=args.basis)
    md = rec["metadata"]
    qubits = md.get("n_qubits_total", md["n_qubits"])  # a mixed head's circuit has ancillas
    at = f"at token {md['tokens'] - 1}: " if md["target"] == "tokens" else ""
    print(f"wrote {args.out} ({md['n_gates']} gates on {qubits} qubits, {md['tokens']} "
          f"tokens, layer {md['layer']} head {md['head']}) and "
          f"{Path(args.out).with_suffix('.json')} ({at}label {md['label']}, "
          f"prediction {md['prediction']})")
    if "hardware" in rec:
        hw = rec["hardware"]
        print(f"{hw['backend']}: depth {hw['depth']}, {hw['two_qubit_gates']} two-qubit gates, "
              f"estimated success probability {hw['estimated_success_probability']:.3g} "
              f"(transpiled circuit in {hw['qasm']})")
    return 0


def cmd_robustness(args) -> int:
    shots = parse_shots(args.shots if args.shots is not None else DEFAULT_SHOTS)
    res = robustness(args.checkpoint, args.out, task=args.task, shots=shots, noise=args.noise,
                     limit=args.limit, seed=args.seed, device=args.device,
                     batch_size=args.batch_size, plot=not args.no_plot, backend=args.backend)
    print(f"wrote {Path(args.out) / 'robustness.json'} ({len(res['rows'])} settings, "
          f"{res['n_test']} test examples)")
    return 0


def register(sub) -> None:
    p = sub.add_parser("export", help="OpenQASM 2.0 circuit of a trained QLAM head for one example")
    p.add_argument("--checkpoint", required=True, help="model.pt written by qlam train")
    p.add_argument("--task", default=None, help="task (default: the training task)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--index", type=int, required=True, help="example index in the split")
    p.add_argument("--layer", type=int, default=0, help="QLAM block (default 0)")
    p.add_argument("--head", type=int, default=0, help="head of that block's layer (default 0)")
    p.add_argument("--tokens", type=int, default=None,
                   help="export the first K tokens (default: all)")
    p.add_argument("--basis", type=int, default=None,
                   help="memory='mixed': which of the head's readout bases ends the circuit "
                        "(default 0)")
    p.add_argument("--noise", default=None, metavar="KIND:P",
                   help="also store the exact noisy probabilities (key 'noisy') with this channel "
                        "after every gate (density matrix: slow for long circuits)")
    p.add_argument("--backend", default=None, metavar="NAME",
                   help="also transpile for this fake IBM backend (e.g. fake_torino; "
                        "pip install 'qlam[hardware]') and store its depth, two-qubit gates "
                        "and estimated success probability (key 'hardware')")
    p.add_argument("--out", required=True, help="QASM file; the JSON goes next to it (.json)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("robustness", help="test accuracy against shots and noise strength "
                                          "(JSON table and plot)")
    p.add_argument("--checkpoint", required=True, help="model.pt of a QLAM model")
    p.add_argument("--task", default=None, help="task (default: the training task)")
    p.add_argument("--shots", default=None,
                   help=f"comma-separated shot counts per token (default {DEFAULT_SHOTS}; "
                        "'' for none)")
    p.add_argument("--noise", nargs="*", default=None, metavar="KIND:P1,P2",
                   help="noise sweeps, e.g. depolarizing:0.001,0.01 bitflip:0.01 (default: "
                        f"{' '.join(DEFAULT_NOISE)}; give the flag alone for none)")
    p.add_argument("--limit", type=int, default=None, help="first N test examples only")
    p.add_argument("--seed", type=int, default=0, help="seed of shots and trajectories")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--backend", default=None, metavar="NAME",
                   help="also evaluate under this fake IBM backend's noise model (Qiskit Aer, "
                        "density matrices; needs --limit: a few examples of a short sequence)")
    p.add_argument("--no-plot", action="store_true", help="skip robustness.png")
    p.add_argument("--out", required=True, help="directory for robustness.json/.md/.png")
    p.set_defaults(func=cmd_robustness)
