"""The memory-ablation table (issue 17): one row per variant from runs/abl/NAME_sSEED/.

Usage: python scripts/ablation_table.py [RUNS_DIR] [OUT_DIR]
Writes OUT_DIR/TABLE.md and OUT_DIR/summaries/NAME_sSEED.json (each run's summary.json and
the last line of its metrics.jsonl), so the table is rebuilt from committed files alone:
python scripts/ablation_table.py results/ablations/summaries results/ablations.
"""

import json
import math
import statistics
import sys
from pathlib import Path

ORDER = ["v1", "v1_frozen", "v1_dtwide", "v1_lrmem1", "v1_depth2", "h16n3", "h16n4_o2",
         "h8n5_o2", "h8n6_o2", "v1_conv4", "v1_conv4_rerun", "v1_conv4_bf16", "frozen_conv4",
         "conv4_h16n4_o2", "mixed_conv4", "mixed_n3h8", "mixed_n3h8_gradfix", "mixed_conv4_gradfix",
         "mixed_n3h8k2", "mixed_n3h8k2_gradfix", "mixed_n3h4k4",
         "mixed_nonsel", "mixed_nodeph", "mixed_n2h16", "mixed_n4h8", "s4d4", "s4d64", "gru"]
WHAT = {
    "v1": "QLAM v1: unitary memory (the paper's), 8 heads x 4 qubits, d_model 64",
    "v1_frozen": "control: v1 with Delta_h at 1e-9 (the memory never moves: no token mixing)",
    "v1_depth2": "v1 with two Trotter layers per token circuit (depth 2)",
    "h16n3": "unitary memory, 16 heads x 3 qubits",
    "h16n4_o2": "unitary memory, 16 heads x 4 qubits, Z-strings on <= 2 qubits read (read_order 2)",
    "h8n5_o2": "unitary memory, 8 heads x 5 qubits, read_order 2",
    "h8n6_o2": "unitary memory, 8 heads x 6 qubits, read_order 2",
    "v1_conv4": "v1 with a depthwise causal convolution over 4 tokens before each memory (Mamba's)",
    "v1_conv4_rerun": "v1_conv4 again (session 12, the machine and load of the bf16 rows): fp32 reference",
    "v1_conv4_bf16": "v1_conv4 trained with --precision bf16 (bfloat16 autocast forward; simulation float32)",
    "frozen_conv4": "control: v1_conv4 with the memory frozen (Delta_h 1e-9): the convolution alone",
    "conv4_h16n4_o2": "h16n4_o2 with the convolution over 4 tokens",
    "mixed_conv4": "mixed n3h8 with the convolution over 4 tokens",
    "v1_dtwide": "v1 with time scales Delta_h log-spaced in 0.001..1 (default 0.001..0.1)",
    "v1_lrmem1": "v1 with the memory parameters at the full learning rate (lr_memory_scale 1)",
    "mixed_n3h8": "mixed memory, 8 heads x 3 qubits (selective reset-and-write + phase damping)",
    "mixed_n3h8_gradfix": "mixed_n3h8 again with the write path's gradients right (every mixed "
                          "row above and below this pair trained with them wrong, before 97f0f31)",
    "mixed_conv4_gradfix": "mixed_conv4 again with the write path's gradients right",
    "mixed_n3h8k2": "mixed n3h8 read in 2 learned bases per head (2 x 7 Z-strings)",
    "mixed_n3h8k2_gradfix": "mixed_n3h8k2 again with the write path's gradients right",
    "mixed_n3h4k4": "mixed memory, 4 heads x 3 qubits read in 4 bases per head",
    "mixed_nonsel": "mixed n3h8, reset probability constant per head (not input-dependent)",
    "mixed_nodeph": "mixed n3h8 without phase damping",
    "mixed_n2h16": "mixed memory, 16 heads x 2 qubits",
    "mixed_n4h8": "mixed memory, 8 heads x 4 qubits",
    "s4d4": "S4D, d_state 4",
    "s4d64": "S4D, d_state 64",
    "gru": "GRU",
}


def _load(runs: Path) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for path in sorted(runs.glob("*_s*")):
        if path.is_dir():
            summary = path / "summary.json"
            if not summary.is_file():
                continue
            s = json.loads(summary.read_text())
            lines = (path / "metrics.jsonl").read_text().splitlines()
            s["last_epoch"] = json.loads(lines[-1])
        elif path.suffix == ".json":
            s = json.loads(path.read_text())
        else:
            continue
        name = path.stem if path.suffix == ".json" else path.name
        s["_name"] = name
        groups.setdefault(name.rsplit("_s", 1)[0], []).append(s)
    return groups


def _pm(xs: list[float]) -> str:
    if len(xs) < 2:
        return f"{xs[0]:.2f} ± –"
    return f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs):.2f}"


def main(runs="runs/abl", out="results/ablations") -> None:
    runs, out = Path(runs), Path(out)
    groups = _load(runs)
    (out / "summaries").mkdir(parents=True, exist_ok=True)
    rows = ["| variant | what | params | seeds | train acc (%) | val acc (%) | test acc (%) "
            "| tokens/s (last epoch; shared cores: not a speed figure) |",
            "|---|---|---|---|---|---|---|---|"]
    for name in sorted(groups, key=lambda n: (ORDER.index(n) if n in ORDER else math.inf, n)):
        runs_ = sorted(groups[name], key=lambda s: s["seed"])
        for s in runs_:
            (out / "summaries" / f"{s['_name']}.json").write_text(json.dumps(s, indent=1))
        tok = statistics.median(s["last_epoch"]["tokens_per_s"] for s in runs_)  # median over seeds
        rows.append(
            f"| {name} | {WHAT.get(name, '')} | {runs_[0]['params']:,} "
            f"| {' '.join(str(s['seed']) for s in runs_)} "
            f"| {_pm([100 * s['last_epoch']['train_acc'] for s in runs_])} "
            f"| {_pm([100 * s['val_acc'] for s in runs_])} "
            f"| {_pm([100 * s['test_acc'] for s in runs_])} | {tok:,.0f} |")
    commands = sorted({s["command"] for g in groups.values() for s in g})
    text = "\n".join(rows) + "\n\nCommands (each run):\n\n```\n" + "\n".join(commands) + "\n```\n"
    (out / "TABLE.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main(*sys.argv[1:3])
