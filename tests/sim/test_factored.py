"""The gate-factored scan (W = P (A ⊗ B)): the same states, probabilities and gradients as
the dense build of the same W and as the dense scan of the same circuit; the automatic
choice; bad inputs."""

from __future__ import annotations

import pytest
import torch
from kernel_isas import ISAS

from qlam.bench.sim_impls import benchmark_circuit
from qlam.memory.circuits import token_circuit
from qlam.sim import circuit_scan as cs
from qlam.sim import lowering
from qlam.sim.lowering import kron, kron_factors, lower, structured_unitary
from qlam.sim.scan import cpp, scan
from qlam.sim.scan.contract import random_unitaries
from qlam.sim.scan.factored import scan_factored, scan_factored_ref


def _complex(u):
    return torch.complex(u[..., 0, :, :], u[..., 1, :, :])


@pytest.mark.parametrize("rows", [1, 2, 3])
def test_kron_factors_rebuild_the_dense_block(rows):
    c = benchmark_circuit(4, torch.Generator().manual_seed(3))
    theta = c.init_params(torch.float64)
    (ops,) = lower(c).dense
    a, b, perm = kron_factors(ops, 4, theta, rows)
    assert a.shape == (2**rows, 2**rows) and b.shape == (2**(4 - rows),) * 2
    torch.testing.assert_close(torch.kron(a, b)[perm], structured_unitary(ops, 4, theta),
                               atol=1e-13, rtol=0)


def test_kron_factors_refuse_blocks_that_do_not_factor():
    c = token_circuit(3)  # trainable RXX / RYY on the ring: not single-qubit gates + a perm
    theta = torch.rand(c.n_params, dtype=torch.float64)
    assert all(kron_factors(ops, 3, theta, 1) is None for ops in lower(c).dense)


def _case(seed=0, bsz=3, length=70, h=2, r=2, n_qubits=3, rows=1):
    g = torch.Generator().manual_seed(seed)
    n = 2**n_qubits
    psi0 = random_unitaries(bsz, h, n=n, generator=g)[..., 0]  # (B, H, 2, N): unit columns
    phases = torch.rand(bsz, length, h, r, n, generator=g, dtype=torch.float64) * 6
    a = _complex(random_unitaries(h, r, n=2**rows, generator=g))
    b = _complex(random_unitaries(h, r, n=n // 2**rows, generator=g))
    perms = [torch.randperm(n, generator=g), None][:r]
    return psi0, phases, a, b, perms


def test_factored_scan_equals_the_dense_build_values_and_gradients():
    """70 tokens: the renormalisation at token 64 is crossed; every input gets a gradient."""
    psi0, phases, a, b, perms = _case()
    ins = [t.clone().requires_grad_() for t in (psi0, phases, a, b)]
    probs, last = scan_factored(*ins, perms)
    probs_ref, last_ref = scan_factored_ref(*ins, perms)
    torch.testing.assert_close(probs, probs_ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(last, last_ref, atol=1e-12, rtol=0)
    wp = torch.randn(probs.shape, dtype=torch.float64)
    wl = torch.randn(last.shape, dtype=torch.float64)
    grads = torch.autograd.grad((probs * wp).sum() + (last * wl).sum(), ins)
    grads_ref = torch.autograd.grad((probs_ref * wp).sum() + (last_ref * wl).sum(), ins)
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref, atol=1e-10, rtol=0)


def test_factored_scan_without_gradients_matches():
    psi0, phases, a, b, perms = _case(seed=1, length=5, n_qubits=4, rows=2)
    with torch.no_grad():
        probs, last = scan_factored(psi0, phases, a, b, perms)
    probs_ref, last_ref = scan_factored_ref(psi0, phases, a, b, perms)
    torch.testing.assert_close(probs, probs_ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(last, last_ref, atol=1e-12, rtol=0)


@pytest.mark.parametrize("n_qubits", [2, 3, 5])
def test_circuit_scan_factored_equals_dense(n_qubits):
    """The benchmark circuit by both methods: probabilities, final state and the gradient of
    theta agree (float64, 70 tokens)."""
    c = benchmark_circuit(n_qubits, torch.Generator().manual_seed(n_qubits))
    x = torch.rand(3, 70, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out = {}
    for method in ("dense", "factored"):
        theta = c.init_params(torch.float64).requires_grad_()
        probs, last = cs.circuit_scan(c, theta, x, method=method, backward="autograd")
        loss = probs.square().sum() + last[:, :, 0].sum()
        loss.backward()
        out[method] = (probs.detach(), last.detach(), theta.grad)
    for d, f in zip(out["dense"], out["factored"]):
        torch.testing.assert_close(f, d, atol=1e-11, rtol=0)


@pytest.mark.parametrize("kernel", [False, True])
def test_auto_picks_factored_from_the_threshold_where_the_circuit_factors(kernel):
    at = cs.min_factored_qubits(kernel)
    assert at == (4 if kernel else cs.FACTORED_MIN_QUBITS)
    assert cs.choose(benchmark_circuit(at - 1), kernel=kernel) == "dense"
    assert cs.choose(benchmark_circuit(at), kernel=kernel) == "factored"
    assert cs.choose(token_circuit(at), kernel=kernel) == "dense"  # does not factor
    assert cs.choose(benchmark_circuit(2), "factored") == "factored"


def test_bad_input_is_named():
    psi0, phases, a, b, perms = _case(length=2)
    with pytest.raises(ValueError, match="permutations"):
        scan_factored(psi0, phases, a, b, [torch.zeros(8, dtype=torch.long), None])
    with pytest.raises(ValueError, match="b must have shape"):
        scan_factored(psi0, phases, a, b[..., :2, :2], perms)
    with pytest.raises(ValueError, match="method must be one of"):
        cs.choose(benchmark_circuit(2), "fast")
    c = token_circuit(2)
    with pytest.raises(ValueError, match="single-qubit gates followed by a permutation"):
        cs.circuit_scan(c, torch.zeros(c.n_params), torch.zeros(1, 2, c.n_inputs),
                        method="factored")


@pytest.mark.parametrize("make", [benchmark_circuit, token_circuit])
def test_auto_lowers_the_circuit_once(make, monkeypatch):
    """One lowering and one build of the factors per call, whichever method "auto" picks."""
    c = make(cs.FACTORED_MIN_QUBITS)
    calls = []
    real_lower = cs.lower
    monkeypatch.setattr(cs, "lower", lambda circ: calls.append(1) or real_lower(circ))
    theta = c.init_params(torch.float64)
    x = torch.rand(2, 3, c.n_inputs, dtype=torch.float64)
    probs, _ = cs.circuit_scan(c, theta, x)
    assert len(calls) == 1 and probs.shape == (2, 3, 1, 2**c.n_qubits)


@pytest.mark.parametrize("method", cs.METHODS)
def test_batched_theta_is_refused_by_every_method(method):
    """A batch of parameter vectors is named as the problem (it used to reach "auto"'s
    factored path at 9+ qubits and be reported as a circuit that does not factor)."""
    c = benchmark_circuit(cs.FACTORED_MIN_QUBITS)
    theta = c.init_params(torch.float64).expand(2, -1)
    with pytest.raises(ValueError, match=rf"theta must have shape \({c.n_params},\)"):
        cs.circuit_scan(c, theta, torch.zeros(1, 2, 1, dtype=torch.float64), method=method)


needs_kernel = pytest.mark.skipif(not cpp.available(), reason="C++ kernel unavailable")


def _random_gates(h, r, n_qubits, generator):
    """(H, R, n, 2, 2) random unitary 2x2 per wire, complex128."""
    return _complex(random_unitaries(h, r * n_qubits, n=2, generator=generator)).view(
        h, r, n_qubits, 2, 2)


@needs_kernel
@pytest.mark.parametrize("isa", ISAS, indirect=True)
@pytest.mark.parametrize("n_qubits", [4, 6])
def test_factored_kernel_equals_the_dense_scan_values_and_gradients(n_qubits, isa):
    """The C++ factored scan against the dense PyTorch scan of the same layers built densely
    (adjoint gradients: the renormalisation at token 64 is the identity in both backwards;
    random permutations, 2 heads, 2 layers, 70 tokens): probabilities, final state and the
    gradients of psi0, phases and every gate (the four low wires' from their per-lane sums),
    to 1e-10 in float64, on every instruction set this CPU runs (their vector widths split
    the low wires' lanes differently)."""
    g = torch.Generator().manual_seed(n_qubits)
    bsz, length, h, r, n = 3, 70, 2, 2, 2**n_qubits
    psi0 = random_unitaries(bsz, h, n=n, generator=g)[..., 0].requires_grad_()
    phases = (torch.rand(bsz, length, h, r, n, generator=g, dtype=torch.float64) * 6
              ).requires_grad_()
    gates = _random_gates(h, r, n_qubits, g).requires_grad_()
    perms = [torch.randperm(n, generator=g), None]
    probs, last = cpp.scan_factored_kernel(psi0, phases,
                                           *cpp.factored_inputs(gates, perms, torch.float64))
    w = torch.stack([torch.stack([kron(gates[i, k]) for k in range(r)]) for i in range(h)])
    w = torch.cat([w[:, :1, perms[0]], w[:, 1:]], 1)  # P (U_0 ⊗ ... ⊗ U_{n-1})
    probs_ref, last_ref = scan(psi0, phases, torch.stack([w.real, w.imag], 2),
                               backward="reversible")
    torch.testing.assert_close(probs, probs_ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(last, last_ref, atol=1e-12, rtol=0)
    wp = torch.randn(probs.shape, dtype=torch.float64, generator=g)
    wl = torch.randn(last.shape, dtype=torch.float64, generator=g)
    ins = (psi0, phases, gates)
    def loss(p, lst, use_probs):  # without: the probabilities get no gradient (None)
        return (lst * wl).sum() + ((p * wp).sum() if use_probs else 0)

    for use_probs in (True, False):
        grads = torch.autograd.grad(loss(probs, last, use_probs), ins, retain_graph=True)
        grads_ref = torch.autograd.grad(loss(probs_ref, last_ref, use_probs), ins,
                                        retain_graph=True)
        for got, want in zip(grads, grads_ref):
            torch.testing.assert_close(got, want, atol=1e-10, rtol=0)


@needs_kernel
@pytest.mark.parametrize("n_qubits", [4, cs.WIRE_MIN_QUBITS - 1, cs.WIRE_MIN_QUBITS])
def test_circuit_scan_factored_kernel_equals_the_pytorch_paths(n_qubits):
    """The benchmark circuit: the kernel's factored scan (from WIRE_MIN_QUBITS on with its
    RZ(x) phases folded into the gates), PyTorch's factored scan and the dense scan agree on
    probabilities, final state and the gradient of theta (float64)."""
    c = benchmark_circuit(n_qubits, torch.Generator().manual_seed(n_qubits))
    x = torch.rand(2, 40, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    out = {}
    for method, backward in [("factored", "kernel"), ("factored", "autograd"),
                             ("dense", "autograd")]:
        theta = c.init_params(torch.float64).requires_grad_()
        probs, last = cs.circuit_scan(c, theta, x, method=method, backward=backward)
        (probs.square().sum() + last[:, :, 0].sum()).backward()
        out[method, backward] = (probs.detach(), last.detach(), theta.grad)
    for other in (("factored", "autograd"), ("dense", "autograd")):
        for got, want in zip(out["factored", "kernel"], out[other]):
            torch.testing.assert_close(got, want, atol=1e-10, rtol=0)


@needs_kernel
@pytest.mark.parametrize("n_qubits", [4, 5])
def test_factored_kernel_expands_angles_through_phase_maps(n_qubits):
    """With maps, the kernel takes angles (B, L, H, F) and builds offset + angles . map per
    layer itself: the same probabilities, final state and gradients (psi0, angles, gates and
    the offset) as the kernel fed the phases expanded by PyTorch (float64, 1e-10)."""
    g = torch.Generator().manual_seed(10 + n_qubits)
    bsz, length, h, r, f, n = 3, 70, 2, 2, 3, 2**n_qubits
    psi0 = random_unitaries(bsz, h, n=n, generator=g)[..., 0].requires_grad_()
    angles = torch.randn(bsz, length, h, f, generator=g, dtype=torch.float64).requires_grad_()
    pmap = torch.randn(r, f, n, generator=g, dtype=torch.float64)
    offset = torch.randn(r, n, generator=g, dtype=torch.float64).requires_grad_()
    gates = _random_gates(h, r, n_qubits, g).requires_grad_()
    perms = [torch.randperm(n, generator=g), None]
    ins = cpp.factored_inputs(gates, perms, torch.float64)
    probs, last = cpp.scan_factored_kernel(psi0, angles, *ins, maps=(pmap, offset))
    phases = offset + torch.einsum("blhf,rfn->blhrn", angles, pmap)
    probs_ref, last_ref = cpp.scan_factored_kernel(psi0, phases, *ins)
    torch.testing.assert_close(probs, probs_ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(last, last_ref, atol=1e-12, rtol=0)
    wp = torch.randn(probs.shape, dtype=torch.float64, generator=g)
    wl = torch.randn(last.shape, dtype=torch.float64, generator=g)
    leaves = (psi0, angles, gates, offset)
    grads = torch.autograd.grad((probs * wp).sum() + (last * wl).sum(), leaves,
                                retain_graph=True)  # ins are shared with the reference
    grads_ref = torch.autograd.grad((probs_ref * wp).sum() + (last_ref * wl).sum(), leaves)
    for got, want in zip(grads, grads_ref):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=0)
    with pytest.raises(RuntimeError, match="phase_map must be"):
        cpp.scan_factored_kernel(psi0, angles, *ins, maps=(pmap[:, :2], offset))
    with pytest.raises(RuntimeError, match="angles must be"):
        cpp.scan_factored_kernel(psi0, phases, *ins, maps=(pmap, offset))


@needs_kernel
@pytest.mark.parametrize("isa", ISAS, indirect=True)
@pytest.mark.parametrize("n_qubits", [4, 6])
def test_factored_kernel_folds_separable_phases_into_the_gates(n_qubits, isa):
    """Per-wire maps (R, F, n + 1) and offset (R, n + 1): the kernel folds each wire's phase
    into its gate (and the global phase into wire 0's) instead of rotating the state; the
    same probabilities, final state and gradients (psi0, angles, gates, the per-wire offset)
    as the per-amplitude maps it expands to, c + sum_q beta_q bit_q (float64, 2 heads,
    2 layers, random permutations, 70 tokens: the renormalisation is crossed)."""
    from qlam.sim.gates import bits

    g = torch.Generator().manual_seed(20 + n_qubits)
    bsz, length, h, r, f, n = 3, 70, 2, 2, 3, 2**n_qubits
    psi0 = random_unitaries(bsz, h, n=n, generator=g)[..., 0].requires_grad_()
    angles = torch.randn(bsz, length, h, f, generator=g, dtype=torch.float64).requires_grad_()
    wmap = torch.randn(r, f, n_qubits + 1, generator=g, dtype=torch.float64)
    woff = torch.randn(r, n_qubits + 1, generator=g, dtype=torch.float64).requires_grad_()
    gates = _random_gates(h, r, n_qubits, g).requires_grad_()
    ins = cpp.factored_inputs(gates, [torch.randperm(n, generator=g), torch.randperm(
        n, generator=g)], torch.float64)
    b = torch.stack([bits(n_qubits, q) for q in range(n_qubits)]).double()  # (n, N)
    def expand(m):
        return m[..., -1:] + m[..., :-1] @ b
    probs, last = cpp.scan_factored_kernel(psi0, angles, *ins, maps=(wmap, woff))
    probs_ref, last_ref = cpp.scan_factored_kernel(psi0, angles, *ins,
                                                   maps=(expand(wmap), expand(woff)))
    torch.testing.assert_close(probs, probs_ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(last, last_ref, atol=1e-12, rtol=0)
    wp = torch.randn(probs.shape, dtype=torch.float64, generator=g)
    wl = torch.randn(last.shape, dtype=torch.float64, generator=g)
    leaves = (psi0, angles, gates, woff)
    for use_probs in (True, False):  # without: no probability gradient reaches the kernel
        def loss(p, lst, use_probs=use_probs):
            return (lst * wl).sum() + ((p * wp).sum() if use_probs else 0)
        grads = torch.autograd.grad(loss(probs, last), leaves, retain_graph=True)
        grads_ref = torch.autograd.grad(loss(probs_ref, last_ref), leaves, retain_graph=True)
        for got, want in zip(grads, grads_ref):
            torch.testing.assert_close(got, want, atol=1e-10, rtol=0)
    with torch.no_grad():  # float32, as `qlam bench sim` runs it
        probs32, last32 = cpp.scan_factored_kernel(
            psi0.float(), angles.float(), ins[0].float(), ins[1],
            maps=(wmap.float(), woff.float()))
    torch.testing.assert_close(probs32.double(), probs.detach(), atol=2e-5, rtol=0)
    torch.testing.assert_close(last32.double(), last.detach(), atol=2e-5, rtol=0)
    with pytest.raises(RuntimeError, match="phase_offset must be"):
        cpp.scan_factored_kernel(psi0, angles, *ins, maps=(wmap, expand(woff)))


@needs_kernel
@pytest.mark.parametrize("mapped", [None, "amplitude", "wire"])
def test_factored_ops_pass_opcheck(mapped):
    """The factored operators' fake implementations, schemas and autograd registration
    (what torch.compile relies on), without phase maps, with per-amplitude and per-wire maps."""
    g = torch.Generator().manual_seed(3)
    bsz, length, h, r, f, n = 2, 3, 1, 2, 2, 16
    psi0 = random_unitaries(bsz, h, n=n, generator=g)[..., 0]
    ins = cpp.factored_inputs(_random_gates(h, r, 4, g), [torch.randperm(n, generator=g), None],
                              torch.float64)
    if mapped:
        phases = torch.randn(bsz, length, h, f, generator=g, dtype=torch.float64)
        width = n if mapped == "amplitude" else 4 + 1  # 4 qubits
        maps = [torch.randn(r, f, width, generator=g, dtype=torch.float64),
                torch.randn(r, width, generator=g, dtype=torch.float64).requires_grad_()]
    else:
        phases = torch.randn(bsz, length, h, r, n, generator=g, dtype=torch.float64)
        maps = [None, None]
    args = [psi0.requires_grad_(), phases.requires_grad_(), ins[0].requires_grad_(), ins[1], 0,
            *maps]
    torch.library.opcheck(torch.ops.qlam.factored_forward.default, args)
    probs, last = cpp.factored_forward(*args)
    grads = (torch.randn(probs.shape, generator=g, dtype=torch.float64),
             torch.randn(last.shape, generator=g, dtype=torch.float64))
    torch.library.opcheck(torch.ops.qlam.factored_backward.default,
                          [last.detach(), phases.detach(), ins[0].detach(), ins[1], *grads,
                           *[None if m is None else m.detach() for m in maps]])


def _kernel_matches_dense(c, x):
    """circuit_scan of circuit c on x (B, L, F) float64: the kernel's factored scan against the
    dense autograd scan, probabilities, final state and the gradients of theta (and of x when
    it requires grad) within 1e-10; returns the kernel's (theta's, x's or None)."""
    out = {}
    for method, backward in [("factored", "kernel"), ("dense", "autograd")]:
        xm = x.detach().clone().requires_grad_(x.requires_grad)
        theta = c.init_params(torch.float64).requires_grad_()
        probs, last = cs.circuit_scan(c, theta, xm, method=method, backward=backward)
        (probs.square().sum() + last[:, :, 1].sum()).backward()
        out[method] = (probs.detach(), last.detach(), theta.grad, xm.grad)
    for got, want in zip(out["factored"], out["dense"]):
        if want is None:
            assert got is None
        else:
            torch.testing.assert_close(got, want, atol=1e-10, rtol=0)
    return out["factored"][2:]


@needs_kernel
@pytest.mark.parametrize("n", [5, cs.WIRE_MIN_QUBITS])
def test_circuit_scan_factored_kernel_with_trainable_phases_and_input_gradients(n):
    """A circuit whose phases take parameters and inputs (trainable RZ and RZ(x) on every
    wire, then RY and a CNOT ring): the kernel's factored scan (the phases expanded from
    maps, the parameters' phases in the offset) against the dense autograd scan: values and
    the gradients of theta and x (float64); from WIRE_MIN_QUBITS on the phases are separable
    and go to the kernel per wire."""
    from qlam.circuit import Circuit
    from qlam.templates import ring

    c = Circuit(n)
    for q in range(n):
        c.rz(q, c.new_param(0.3 * (q + 1)))
        c.rz(q, c.input(q % 2))
        c.ry(q, c.new_param(0.2 - 0.1 * q))
    for a, b in ring(n):
        c.cnot(a, b)
    assert cs.choose(c, "factored") == "factored" and cs.choose(c, "dense") == "dense"
    x = torch.rand(2, 30, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    g_theta, g_x = _kernel_matches_dense(c, x.requires_grad_())
    assert g_theta.abs().sum() > 0 and g_x.abs().sum() > 0


@needs_kernel
def test_circuit_scan_factored_kernel_with_two_qubit_phases():
    """RZZ(x) on a ring makes phases that are not separable: from WIRE_MIN_QUBITS on they
    still go to the kernel per amplitude (rotated), and agree with the dense autograd scan."""
    from qlam.circuit import Circuit
    from qlam.templates import ring

    n = cs.WIRE_MIN_QUBITS
    c = Circuit(n)
    for a, b in ring(n):
        c.rzz(a, b, c.input(0))
    for q in range(n):
        c.ry(q, c.new_param(0.2 + 0.1 * q))
    for a, b in ring(n):
        c.cnot(a, b)
    assert not lowering.separable_phases(lower(c))
    _kernel_matches_dense(c, torch.rand(2, 6, 1, dtype=torch.float64,
                                        generator=torch.Generator().manual_seed(4)))


@needs_kernel
@pytest.mark.parametrize("n", [4, cs.WIRE_MIN_QUBITS])
def test_circuit_scan_factored_kernel_without_inputs(n):
    """A circuit that takes no inputs (trainable RZ, RY on every wire, a CNOT ring): the
    kernel's phase map has no angles (F = 0; it crashed on the empty map before); values and
    the gradient of theta as the dense autograd scan (float64), rotated and per wire."""
    from qlam.circuit import Circuit
    from qlam.templates import ring

    c = Circuit(n)
    for q in range(n):
        c.rz(q, c.new_param(0.3 * (q + 1))).ry(q, c.new_param(0.2 - 0.1 * q))
    for a, b in ring(n):
        c.cnot(a, b)
    _kernel_matches_dense(c, torch.zeros(2, 5, 0, dtype=torch.float64))


@needs_kernel
def test_factored_kernel_float32_and_bad_input():
    g = torch.Generator().manual_seed(0)
    psi0 = random_unitaries(2, 1, n=16, generator=g)[..., 0]
    phases = torch.rand(2, 5, 1, 1, 16, generator=g, dtype=torch.float64)
    ins = cpp.factored_inputs(_random_gates(1, 1, 4, g), [torch.randperm(16, generator=g)],
                              torch.float64)
    probs, last = cpp.scan_factored_kernel(psi0, phases, *ins)
    probs32, last32 = cpp.scan_factored_kernel(psi0.float(), phases.float(), ins[0].float(),
                                               ins[1])
    torch.testing.assert_close(probs32.double(), probs, atol=2e-6, rtol=0)
    torch.testing.assert_close(last32.double(), last, atol=2e-6, rtol=0)
    with pytest.raises(RuntimeError, match="permutations"):
        cpp.scan_factored_kernel(psi0, phases, ins[0], torch.zeros_like(ins[1]))
    with pytest.raises(ValueError, match="needs >= 4 qubits"):
        cpp.factored_inputs(_random_gates(1, 1, 3, g), [None], torch.float64)
