"""`qlam export` (one trained QLAM head's circuit for one test example, as OpenQASM 2.0 and
JSON) and `qlam robustness` (test accuracy under finite shots and noise, see
:mod:`qlam.robustness`)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from qlam.store import atomic_write_text

WIRE_ORDER = ("wire 0 is the most significant bit: probabilities[i] belongs to the basis state "
              "whose bit string format(i, '0{n}b') has wire 0 first; the QASM's q[i] is wire i "
              "(Qiskit orders basis states the other way round: reverse its qubits to compare)")


def load_qlam(path, device="cpu"):
    """(QLAMClassifier, checkpoint) or a clear error for any other model."""
    from qlam.models.qlam import QLAMClassifier
    from qlam.train import load_model

    model, ck = load_model(path, device)
    if not isinstance(model, QLAMClassifier):
        raise ValueError(f"{path} holds a {ck.get('model_name')!r} model; this command needs a "
                         "QLAM model (trained with --model qlam)")
    return model, ck


def _int_in(name: str, value: int, size: int, what: str) -> int:
    if not 0 <= value < size:
        raise ValueError(f"{name} {value} out of range: {what} has {size} "
                         f"(valid 0..{size - 1})")
    return value


def export_example(checkpoint, out, *, index: int, task: str | None = None, layer: int = 0,
                   head: int = 0, tokens: int | None = None, split: str = "test",
                   noise=None, backend: str | None = None) -> dict:
    """Write ``out`` (OpenQASM 2.0) and ``out`` with .json (probabilities, readout, metadata)
    for example ``index`` of ``split``; returns the JSON record. ``noise`` (e.g.
    "depolarizing:0.001") adds the exact density-matrix probabilities of the same circuits
    with that channel after every gate on each wire it touches (key ``noisy``). ``backend``
    (a fake IBM backend, see :mod:`qlam.hardware`) adds the measured circuit transpiled for
    it: depth, two-qubit gates, estimated success probability (key ``hardware``), and writes
    that circuit to ``out`` with suffix .BACKEND.qasm."""
    from qlam import train as training
    from qlam.export import export_head
    from qlam.sim.noise import circuit_density_matrix, parse_noise

    channel = parse_noise(noise)
    if backend is not None:
        from qlam.hardware import get_backend

        backend = get_backend(backend)  # an unknown name fails before any work
    out = Path(out)
    model, ck = load_qlam(checkpoint)
    _int_in("layer", layer, len(model.blocks), "the model's block list")
    mem = model.blocks[layer].memory
    _int_in("head", head, mem.n_heads, f"block {layer}'s QLAM layer")
    if tokens is not None and tokens < 1:
        raise ValueError(f"tokens must be >= 1, got {tokens}")
    cfg = training.config_from_dict(ck["config"])
    if task is not None:
        cfg.task = task
    data = training.build_task(cfg).split(split)
    _int_in("index", index, len(data), f"the {cfg.task} {split} split")
    x, y = data[index]
    if tokens is not None and tokens > x.shape[0]:
        raise ValueError(f"tokens must lie in 1..{x.shape[0]} (the sequence length), got {tokens}")
    ex = export_head(model, x, layer=layer, head=head, tokens=tokens)
    with torch.no_grad():
        pred = int(model(x[None].float()).argmax(-1))
    n = ex.n_qubits
    qasm = ex.circuit.to_qasm()
    record = {
        "probabilities": ex.probabilities.tolist(),
        "amplitudes": {"real": ex.state.real.tolist(), "imag": ex.state.imag.tolist()},
        "readout": None if ex.readout is None else {
            "token": ex.tokens - 1,
            "probabilities": ex.readout_probabilities.tolist(),
            "qasm": ex.readout.to_qasm(),
            "note": "the query-chosen measurement basis of the last exported token: apply this "
                    "circuit after the state circuit, then measure every qubit; these are the "
                    "model's Born probabilities of that measurement",
        },
        "metadata": {
            "checkpoint": str(checkpoint), "model": ck.get("model_name"), "task": cfg.task,
            "split": split, "index": index, "label": int(y), "prediction": pred,
            "layer": layer, "head": head, "tokens": ex.tokens, "sequence_length": int(x.shape[0]),
            "n_qubits": n, "n_heads": mem.n_heads, "n_layers": len(model.blocks),
            "depth": mem.depth, "query_basis": mem.query_basis,
            "gates": ex.circuit.gate_count(), "n_gates": len(ex.circuit),
            "circuit_depth": ex.circuit.depth(), "qasm": out.name,
            "wire_order": WIRE_ORDER.format(n=n),
            "circuit": "state preparation (RY, RZ per qubit) from |0...0>, then each token's "
                       "circuit (input RZ and ring RZZ, trainable RX, RY and ring RXX, RYY, per "
                       "layer) with the trained and input-derived angles; probabilities are "
                       "|psi_K|^2 at its end, computed by the model's own recurrence (float64)",
        },
    }
    if channel is not None:
        rho = circuit_density_matrix(ex.circuit, channel)
        noisy = {"noise": str(channel),
                 "placement": "after every gate, on each wire it touches (exact density matrix)",
                 "probabilities": torch.diagonal(rho).real.tolist()}
        if ex.readout is not None:
            rho_read = circuit_density_matrix(ex.readout, channel, rho=rho)
            noisy["readout_probabilities"] = torch.diagonal(rho_read).real.tolist()
        record["noisy"] = noisy
    if backend is not None:
        from qiskit import qasm2

        from qlam.hardware import device_report

        record["hardware"], tqc = device_report(ex, backend)
        record["hardware"]["qasm"] = out.with_suffix(f".{backend.name}.qasm").name
        atomic_write_text(out.with_suffix(f".{backend.name}.qasm"), qasm2.dumps(tqc))
    atomic_write_text(out, qasm)
    atomic_write_text(out.with_suffix(".json"), json.dumps(record, indent=1))
    return record


def cmd_export(args) -> int:
    rec = export_example(args.checkpoint, args.out, index=args.index, task=args.task,
                         layer=args.layer, head=args.head, tokens=args.tokens, split=args.split,
                         noise=args.noise, backend=args.backend)
    md = rec["metadata"]
    print(f"wrote {args.out} ({md['n_gates']} gates on {md['n_qubits']} qubits, {md['tokens']} "
          f"tokens, layer {md['layer']} head {md['head']}) and "
          f"{Path(args.out).with_suffix('.json')} (label {md['label']}, "
          f"prediction {md['prediction']})")
    if "hardware" in rec:
        hw = rec["hardware"]
        print(f"{hw['backend']}: depth {hw['depth']}, {hw['two_qubit_gates']} two-qubit gates, "
              f"estimated success probability {hw['estimated_success_probability']:.3g} "
              f"(transpiled circuit in {hw['qasm']})")
    return 0


def cmd_robustness(args) -> int:
    from qlam.robustness import DEFAULT_NOISE, DEFAULT_SHOTS, parse_shots, robustness

    shots = parse_shots(args.shots if args.shots is not None else DEFAULT_SHOTS)
    noise = args.noise if args.noise is not None else list(DEFAULT_NOISE)
    res = robustness(args.checkpoint, args.out, task=args.task, shots=shots, noise=noise,
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
    p.add_argument("--noise", default=None, metavar="KIND:P",
                   help="also store the exact noisy probabilities (key 'noisy') with this channel "
                        "after every gate (density matrix: slow for long circuits)")
    p.add_argument("--backend", default=None, metavar="NAME",
                   help="also transpile for this fake IBM backend (e.g. fake_torino; "
                        "pip install 'qlam[hardware]') and store its depth, two-qubit gates "
                        "and estimated success probability (key 'hardware')")
    p.add_argument("--out", required=True, help="QASM file; the JSON goes next to it (.json)")
    p.set_defaults(func=cmd_export)

    from qlam.robustness import DEFAULT_NOISE, DEFAULT_SHOTS

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
