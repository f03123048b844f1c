"""Modules mark their own optimizer needs (qlam.optim_hints); train.param_groups builds
AdamW's groups from the marks, with the groups the old name list gave."""

from __future__ import annotations

import pytest

from qlam.models import REGISTRY, build_model
from qlam.optim_hints import MEMORY, hints
from qlam.train import TrainConfig, param_groups

# the parameter names the training script used to recognise as memory parameters (with the
# mixed memory's damping rates and constant reset logits)
OLD_NAMES = ("theta", "log_dt", "prep_theta", "read_theta", "log_A_real", "A_imag",
             "log_gamma", "gate_logit")


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_marked_parameters_are_the_memory_parameters(name):
    model = build_model(name, 3, 4, d_model=8, n_layers=1, n_heads=2, n_qubits=2)
    marked = {n for n, p in model.named_parameters() if hints(p).get("lr_scale") == MEMORY}
    by_name = {n for n, _ in model.named_parameters() if n.rsplit(".", 1)[-1] in OLD_NAMES}
    assert marked == by_name
    assert bool(marked) == (name in ("qlam", "qlam-mixed", "ssm", "qlstm"))


def test_param_groups_from_the_hints():
    model = build_model("qlam", 3, 4, d_model=8, n_layers=1, n_heads=2, n_qubits=2)
    cfg = TrainConfig(weight_decay=0.1, lr_memory_scale=0.25)
    groups = param_groups(model, cfg)
    assert [(g["weight_decay"], g["lr_scale"]) for g in groups] == [(0.1, 1.0), (0.0, 1.0),
                                                                    (0.0, 0.25)]
    decay, no_decay, memory = ({id(p) for p in g["params"]} for g in groups)
    named = dict(model.named_parameters())
    assert id(named["blocks.0.memory.theta"]) in memory
    assert id(named["blocks.0.memory.in_proj.weight"]) in decay
    assert id(named["blocks.0.memory.in_proj.bias"]) in no_decay
    assert sum(len(g["params"]) for g in groups) == len(named)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_no_bias_is_decayed(name):
    """Every parameter named a bias gets no weight decay (QLSTM's gate biases, one (4, d)
    matrix, had been decayed as a weight matrix)."""
    model = build_model(name, 3, 4, d_model=8, n_layers=1, n_heads=2, n_qubits=2)
    groups = param_groups(model, TrainConfig(weight_decay=0.1))
    decayed = {id(p) for g in groups if g["weight_decay"] for p in g["params"]}
    biases = [n for n, p in model.named_parameters()
              if (n.endswith("bias") or n.endswith("_b")) and id(p) in decayed]
    assert biases == []
