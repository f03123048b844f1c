"""Accuracy of copying and selective-copying models per copied token (issue 18).

For each run directory (its model.pt), the test set of its run (regenerated from the run's
config), the share of examples whose k-th copied token is right, k = 1..M (10 for copying,
16 for selective copying): is the memory limited by how far back it reaches (early tokens
worse) or by how many symbols it keeps apart (flat)?

    python scripts/copying_positions.py results/long/memory/copying-1000/copying/*/seed0
"""

from __future__ import annotations

import sys

import torch

from qlam import config
from qlam.config import config_from_dict
from qlam.evaluate import load_model


def per_position(run_dir: str, batch: int = 100) -> list[float]:
    model, ck = load_model(f"{run_dir}/model.pt", torch.device("cpu"))
    cfg = config_from_dict(ck["config"])
    cfg.test_lengths = None
    task = config.build_task(cfg, splits=("test",))
    x, y = task.test.x, task.test.y  # (B, L) tokens, (B, L) targets (-100: no target)
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x[i:i + batch]).argmax(-1) for i in range(0, len(x), batch)])
    pos = (y >= 0).nonzero()[:, 1].view(len(y), -1)  # (B, 10) target positions, in order
    rows = torch.arange(len(y))[:, None]
    return (pred[rows, pos] == y[rows, pos]).float().mean(0).tolist()


if __name__ == "__main__":
    torch.set_num_threads(1)
    for d in sys.argv[1:]:
        acc = per_position(d)
        print(f"| {d} | " + " | ".join(f"{100 * a:.0f}" for a in acc) + " |")
