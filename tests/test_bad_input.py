"""Bad input gets a ValueError or TypeError whose message names the problem."""

from __future__ import annotations

import math

import pytest
import torch

import qlam
from qlam import Angle, Circuit
from qlam.circuit import MAX_QUBITS
from qlam.sim.statevector import zero_state

NAN, INF = float("nan"), float("inf")


def _encoded(n=2) -> Circuit:
    c = Circuit(n)
    for q in range(n):
        c.ry(q, c.input(q))
    c.rz(0, c.new_param(0.3))
    return c


# ---- wires ---------------------------------------------------------------------------------
@pytest.mark.parametrize("wires", [(3,), (-1,), (0, 5)])
def test_wire_out_of_range(wires):
    c = Circuit(3)
    name = "h" if len(wires) == 1 else "cnot"
    with pytest.raises(ValueError, match=rf"wire {wires[-1]} out of range for 3 qubits"):
        c.append(name, wires)


def test_wire_out_of_range_in_builders():
    with pytest.raises(ValueError, match="wire 2 out of range"):
        Circuit(2).rx(2, 0.1)
    with pytest.raises(ValueError, match="wire 7 out of range"):
        Circuit(2).rzz(0, 7, 0.1)


@pytest.mark.parametrize("name", ["cnot", "cz", "swap", "rzz", "rxx", "ryy"])
def test_duplicate_wires(name):
    n_angles = 1 if name.startswith("r") else 0
    with pytest.raises(ValueError, match=r"duplicate wires \(1, 1\)"):
        Circuit(3).append(name, (1, 1), [0.2] * n_angles)


def test_wrong_wire_count_and_type():
    with pytest.raises(ValueError, match="acts on 2 wire"):
        Circuit(3).append("cnot", (0,))
    with pytest.raises(TypeError, match="wire must be an int"):
        Circuit(3).h(1.0)
    with pytest.raises(TypeError, match="wire must be an int"):
        Circuit(3).h(True)


def test_not_a_circuit_or_gate_name():
    with pytest.raises(TypeError, match="circuit must be a qlam.Circuit, got str"):
        qlam.statevector("x")
    with pytest.raises(TypeError, match="gate name must be a str, got int"):
        Circuit(1).append(5, 0)


def test_unknown_gate_and_angle_count():
    with pytest.raises(ValueError, match="unknown gate 'ccx'"):
        Circuit(3).append("ccx", (0, 1, 2))
    with pytest.raises(ValueError, match="takes 3 angle"):
        Circuit(1).append("u3", 0, (0.1, 0.2))


# ---- qubit counts and memory ---------------------------------------------------------------
@pytest.mark.parametrize("n", [0, -2, MAX_QUBITS + 1, 1000])
def test_too_many_or_too_few_qubits(n):
    with pytest.raises(ValueError, match=rf"n_qubits={n} out of range.*1\.\.{MAX_QUBITS} qubits"):
        Circuit(n)


def test_n_qubits_type():
    with pytest.raises(TypeError, match="n_qubits must be an int"):
        Circuit(2.0)


def test_too_many_qubits_for_memory_compiled():
    """A dense 2^24 x 2^24 unitary does not fit: forced fusing says so (the default compiled
    path never fuses here, see qlam.sim.compiled.fusing_pays)."""
    from qlam.sim.compiled import CompiledCircuit, fusing_pays

    c = Circuit(24).h(0)
    assert not fusing_pays(1, 1, 24)
    with pytest.raises(ValueError, match="too many qubits for memory.*dense unitary.*24 qubits"):
        CompiledCircuit(c).run(fuse="all")


def test_too_many_qubits_for_memory_batch():
    with pytest.raises(ValueError, match=f"too many qubits for memory.*{MAX_QUBITS} qubits"):
        zero_state(MAX_QUBITS, batch=1_000_000)


# ---- non-finite numbers --------------------------------------------------------------------
@pytest.mark.parametrize("bad", [NAN, INF, -INF])
def test_non_finite_angles(bad):
    with pytest.raises(ValueError, match="finite"):
        Circuit(1).rx(0, bad)
    with pytest.raises(ValueError, match="finite"):
        Circuit(1).u3(0, 0.1, bad, 0.2)
    with pytest.raises(ValueError, match="finite"):
        Circuit(1).new_param(bad)
    c = Circuit(1)
    with pytest.raises(ValueError, match="finite"):
        c.input(0, a=bad)
    with pytest.raises(ValueError, match="finite"):
        c.input(0, b=bad)
    with pytest.raises(ValueError, match="finite"):
        Circuit(1).rx(0, torch.tensor(bad))
    with pytest.raises(ValueError, match="finite"):
        Circuit(1).rx(0, Angle("const", value=bad))  # hand-made Angles are checked too
    with pytest.raises(ValueError, match="finite"):
        Circuit(1).rx(0, Angle("input", index=0, a=bad))


@pytest.mark.parametrize("method", ["reference", "compiled"])
@pytest.mark.parametrize("bad", [NAN, INF])
def test_non_finite_inputs_and_params(method, bad):
    c = _encoded()
    x = torch.tensor([[0.1, bad]], dtype=torch.float64)
    with pytest.raises(ValueError, match="inputs contain NaN or inf"):
        qlam.statevector(c, x, method=method)
    x = torch.tensor([[0.1, 0.2]], dtype=torch.float64)
    with pytest.raises(ValueError, match="params contain NaN or inf"):
        qlam.statevector(c, x, torch.tensor([bad], dtype=torch.float64), method=method)


# ---- input shapes and dtypes ---------------------------------------------------------------
@pytest.mark.parametrize("method", ["reference", "compiled"])
def test_wrong_input_shape(method):
    c = _encoded(3)
    with pytest.raises(ValueError, match=r"inputs must have shape \(batch, features\), got \(3,\)"):
        qlam.statevector(c, torch.zeros(3, dtype=torch.float64), method=method)
    with pytest.raises(ValueError, match=r"got \(2, 2, 3\)"):
        qlam.statevector(c, torch.zeros(2, 2, 3, dtype=torch.float64), method=method)
    with pytest.raises(ValueError, match="inputs have 2 features but the circuit reads 3"):
        qlam.statevector(c, torch.zeros(4, 2, dtype=torch.float64), method=method)
    with pytest.raises(ValueError, match="circuit reads 3 input feature"):
        qlam.statevector(c, None, method=method)


@pytest.mark.parametrize("method", ["reference", "compiled"])
def test_wrong_input_dtype(method):
    c = _encoded()
    with pytest.raises(TypeError, match="inputs must be a floating-point tensor, got dtype torch.int64"):
        qlam.statevector(c, torch.zeros(1, 2, dtype=torch.int64), method=method)
    with pytest.raises(TypeError, match="floating-point.*complex"):
        qlam.statevector(c, torch.zeros(1, 2, dtype=torch.complex64), method=method)
    with pytest.raises(TypeError, match="inputs must be a tensor or array of numbers"):
        qlam.statevector(c, [["a", "b"]], method=method)


@pytest.mark.parametrize("method", ["reference", "compiled"])
def test_wrong_params(method):
    c = _encoded()
    x = torch.zeros(1, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"params must have shape \(1,\), got \(2,\)"):
        qlam.statevector(c, x, torch.zeros(2, dtype=torch.float64), method=method)
    with pytest.raises(TypeError, match="params must be a float tensor"):
        qlam.statevector(c, x, torch.zeros(1, dtype=torch.int64), method=method)


@pytest.mark.parametrize("method", ["reference", "compiled"])
def test_params_are_taken_in_the_simulation_dtype(method):
    """float16 params (polar had no half kernel) and float32 params of a float64 simulation
    (kept at float32 precision, ~1e-8 off) are converted to the dtype asked for."""
    c = _encoded()
    x = torch.full((1, 2), 0.7, dtype=torch.float64)
    p64 = torch.tensor([0.3], dtype=torch.float64)
    want = qlam.statevector(c, x, p64, method="reference")
    got32 = qlam.statevector(c, x, p64.float(), method=method)
    torch.testing.assert_close(got32, qlam.statevector(c, x, p64.float().double(), method=method),
                               atol=0, rtol=0)
    got16 = qlam.statevector(c, x, p64.half(), method=method)
    assert got16.dtype == torch.complex128
    torch.testing.assert_close(got16, want, atol=1e-3, rtol=0)


@pytest.mark.parametrize("method", ["reference", "compiled"])
def test_empty_batch_and_complex_dtype(method):
    """An empty batch gives an empty result (it failed in a reshape); a complex dtype means
    that precision (the compiled path failed inside torch)."""
    c = _encoded()
    assert qlam.statevector(c, torch.zeros(0, 2), method=method).shape == (0, 4)
    assert qlam.CircuitLayer(c)(torch.zeros(0, 2)).shape[0] == 0
    x = torch.tensor([[0.2, -1.1]])
    got = qlam.statevector(c, x, method=method, dtype=torch.complex64)
    assert got.dtype == torch.complex64
    torch.testing.assert_close(got, qlam.statevector(c, x, method="reference",
                                                     dtype=torch.float32))


def test_wrong_dtype_method_and_state():
    c = Circuit(2).h(0)
    with pytest.raises(TypeError, match="dtype must be float32/float64"):
        qlam.statevector(c, dtype=torch.int32)
    with pytest.raises(ValueError, match="method must be 'compiled' or 'reference'"):
        qlam.statevector(c, method="fast")
    with pytest.raises(ValueError, match="not normalised"):
        qlam.statevector(c, state=torch.ones(1, 4, dtype=torch.complex128))
    with pytest.raises(ValueError, match=r"state must have shape \(batch, 4\)"):
        qlam.statevector(c, state=torch.ones(1, 8, dtype=torch.complex128) / math.sqrt(8))
    with pytest.raises(TypeError, match="state must be a complex tensor"):
        qlam.statevector(c, state=torch.ones(1, 4) / 2)
    two = zero_state(2, batch=2)
    with pytest.raises(ValueError, match="state holds 2 states for a batch of 3 inputs"):
        qlam.statevector(_encoded(), torch.zeros(3, 2), state=two)


def test_bind_errors():
    c = _encoded()
    with pytest.raises(ValueError, match="circuit reads 2 input feature"):
        c.bind()
    with pytest.raises(ValueError, match=r"inputs must have shape \(2,\)"):
        c.bind(inputs=[0.1])
    with pytest.raises(ValueError, match=r"params must have shape \(1,\)"):
        c.bind(params=[0.1, 0.2], inputs=[0.1, 0.2])


def test_parameter_and_feature_indices():
    c = Circuit(1)
    with pytest.raises(ValueError, match="parameter index 0 out of range"):
        c.rx(0, Angle("param", index=0))
    with pytest.raises(ValueError, match="input feature index must be an int >= 0"):
        c.input(-1)
    with pytest.raises(TypeError, match="angle must be a number or an Angle"):
        c.rx(0, "0.5")


def test_sampling_a_state_that_is_no_state_and_counts_of_impossible_registers():
    """Sampling an all-zero or NaN state failed inside torch.multinomial; counts of -1 or 40
    qubits failed in torch (40: an 8 TB allocation)."""
    with pytest.raises(ValueError, match="state must be normalised"):
        qlam.sample(torch.zeros(1, 4, dtype=torch.complex128), 3)
    with pytest.raises(ValueError, match="state must be finite"):
        qlam.sample(torch.full((1, 4), NAN, dtype=torch.complex128), 3)
    for n in (-1, 0, MAX_QUBITS + 1, 2.0, True):
        with pytest.raises(ValueError, match=f"n_qubits must be an int in 1..{MAX_QUBITS}"):
            qlam.counts(torch.tensor([0]), n)


def test_model_options_and_inputs_are_checked():
    """A time scale of inf built a layer that output only NaN; n_layers < 1 built a model
    without memory; an input of another dtype or type failed inside torch."""
    from qlam.memory.mixed import MixedQLAM

    for layer in (qlam.QLAM, MixedQLAM):
        with pytest.raises(ValueError, match=r"need 0 < dt_min <= dt_max < inf"):
            layer(4, 2, 2, dt_max=INF)
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="n_layers must be an int >= 1"):
            qlam.QLAMClassifier(3, 2, n_layers=bad)
    model = qlam.QLAMClassifier(3, 2, d_model=8, n_layers=1, n_heads=2, n_qubits=2)
    with pytest.raises(TypeError, match="input must be torch.float32 like the model's"):
        model(torch.randn(2, 4, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="input must be a tensor, got list"):
        model([[[0.0] * 3]])
    assert model.double()(torch.randn(2, 4, 3, dtype=torch.float64)).dtype == torch.float64

