"""The compiled recurrence kernel against the plain-autograd reference (qlam.sim.scan.torch_engine)."""

import contextlib
import os
import subprocess
import sys

import pytest
import torch
from kernel_isas import ISAS

from qlam.sim.scan import cpp, random_unitaries, scan, torch_engine

if not cpp.available():
    pytest.skip(f"compiled recurrence kernel unavailable: {cpp.error()}",
                allow_module_level=True)


@pytest.fixture(params=[True, False], ids=["gauss", "realform"])
def gauss(request):
    """Complex products as three real GEMMs (where N allows) or one real-form GEMM."""
    cpp.set_gauss(request.param)
    yield request.param
    cpp.set_gauss(True)


def test_random_unitaries_are_unitary_and_seeded():
    w = random_unitaries(3, 2, n=8, generator=torch.Generator().manual_seed(1))
    assert w.shape == (3, 2, 2, 8, 8) and w.dtype == torch.float64
    u = torch.complex(w[..., 0, :, :], w[..., 1, :, :])
    eye = torch.eye(8, dtype=torch.complex128)
    assert (u @ u.mH - eye).abs().max() < 1e-12
    again = random_unitaries(3, 2, n=8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(w, again) and not torch.equal(w[0, 0], w[0, 1])


def problem(b, length, h, r, n, read, dtype=torch.float64, seed=0, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    psi = torch.randn(b, h, n, dtype=torch.complex128, generator=gen)
    psi = psi / psi.abs().pow(2).sum(-1, keepdim=True).sqrt()
    psi0 = torch.stack([psi.real, psi.imag], -2).to(dtype)
    phases = scale * torch.randn(b, length, h, r, n, dtype=torch.float64, generator=gen)
    w = random_unitaries(h, r, n=n, generator=gen, dtype=dtype)
    rp = wr = None
    if read:
        rp = torch.randn(b, length, h, n, dtype=torch.float64, generator=gen).to(dtype)
        wr = random_unitaries(h, n=n, generator=gen, dtype=dtype)
    weights = torch.randn(b, length, h, n, dtype=torch.float64, generator=gen).to(dtype)
    g_last = torch.randn(b, h, 2, n, dtype=torch.float64, generator=gen).to(dtype)
    return [psi0, phases.to(dtype), w, rp, wr], weights, g_last


@contextlib.contextmanager
def exact_reference():
    """The forward may rescale the state to norm 1 every RENORM_EVERY tokens (a no-op up to
    rounding for a normalised state) and the reversible backward treats that as the identity;
    the reference gradients are those of the recurrence without it."""
    old = getattr(torch_engine, "RENORM_EVERY", None)
    if old is not None:
        torch_engine.RENORM_EVERY = 1 << 62
    try:
        yield
    finally:
        if old is not None:
            torch_engine.RENORM_EVERY = old


def scan_autograd(*args):
    with exact_reference():
        return torch_engine.scan_autograd(*args)


def run(fn, inputs, weights, g_last, use_probs=True, use_last=True):
    leaves = [x.detach().clone().requires_grad_() if x is not None else None for x in inputs]
    probs, last = fn(*leaves)
    loss = 0
    if use_probs:
        loss = loss + (probs * weights).sum()
    if use_last:
        loss = loss + (last * g_last).sum()
    grads = torch.autograd.grad(loss, [x for x in leaves if x is not None], allow_unused=True,
                                materialize_grads=True)
    return [probs.detach(), last.detach(), *grads]


_REFERENCE: dict = {}


def reference(shape):
    """The problem of a shape and its plain-autograd outputs and gradients (computed once)."""
    if shape not in _REFERENCE:
        b, length, h, r, n, read = shape
        inputs, weights, g_last = problem(b, length, h, r, 2**n, read)
        _REFERENCE[shape] = inputs, weights, g_last, run(scan_autograd, inputs, weights, g_last)
    return _REFERENCE[shape]


def assert_close(got, want, tol):
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        assert a.shape == b.shape, (i, a.shape, b.shape)
        err = (a - b).abs().max().item() if a.numel() else 0.0
        scale = max(1.0, b.abs().max().item() if b.numel() else 0.0)
        assert err <= tol * scale, f"output {i}: max error {err:.3g} > {tol:.1g} * {scale:.3g}"


SHAPES = [  # (B, L, H, R, n qubits, readout basis)
    (1, 1, 1, 1, 1, False),
    (3, 1, 2, 2, 3, True),
    (2, 7, 3, 1, 2, False),
    (5, 7, 2, 2, 4, True),
    (13, 7, 4, 1, 5, False),
    (9, 7, 2, 1, 6, True),
    (4, 300, 2, 2, 3, True),
    (3, 300, 3, 1, 4, False),
]


@pytest.mark.parametrize("isa", ISAS, indirect=True)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}-L{}-H{}-R{}-n{}-{}".format(
    *s[:5], "read" if s[5] else "plain"))
def test_matches_autograd_float64(isa, gauss, shape):
    inputs, weights, g_last, want = reference(shape)
    got = run(cpp.scan_kernel, inputs, weights, g_last)
    assert_close(got, want, 1e-10)


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("shape", [(13, 7, 4, 1, 5, False), (9, 7, 2, 2, 6, True)],
                         ids=["n5-plain", "n6-read"])
def test_threads_sum_their_gradients(gauss, threads, shape):
    """With several threads each one accumulates the W gradients of its own tasks; the
    kernel sums them (the reduction untested at one thread)."""
    inputs, weights, g_last, want = reference(shape)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = run(cpp.scan_kernel, inputs, weights, g_last)
    finally:
        torch.set_num_threads(old)
    assert_close(got, want, 1e-10)


@pytest.mark.parametrize("isa", ISAS[-1:], indirect=True)
def test_length_2000_and_norms(isa):
    inputs, weights, g_last, want = reference((2, 2000, 2, 1, 2, True))
    got = run(cpp.scan_kernel, inputs, weights, g_last)
    assert_close(got, want, 1e-10)
    probs, last = got[0], got[1]
    assert torch.allclose(last.pow(2).sum((-1, -2)), torch.ones(2, 2, dtype=torch.float64),
                          atol=1e-12, rtol=0)
    assert torch.allclose(probs.sum(-1), torch.ones(2, 2000, 2, dtype=torch.float64),
                          atol=1e-12, rtol=0)


def test_float32_long_sequence_keeps_norm():
    inputs, weights, g_last = problem(3, 2000, 2, 2, 16, True, dtype=torch.float32, seed=4)
    probs, last = cpp.scan_kernel(*inputs)
    assert (last.double().pow(2).sum((-1, -2)) - 1).abs().max() < 1e-4
    assert (probs.double().sum(-1) - 1).abs().max() < 1e-4


@pytest.mark.parametrize("read", [False, True])
def test_float32_agrees_with_float64(read):
    inputs, weights, g_last = problem(6, 50, 3, 2, 16, read, seed=5)
    ref = run(cpp.scan_kernel, inputs, weights, g_last)
    low = [x.float() if x is not None else None for x in inputs]
    got = run(cpp.scan_kernel, low, weights.float(), g_last.float())
    assert all(x.dtype == torch.float32 for x in got)
    assert_close([x.double() for x in got], ref, 2e-4)


@pytest.mark.parametrize("use_probs,use_last", [(True, False), (False, True)])
def test_partial_outputs(use_probs, use_last):
    inputs, weights, g_last = problem(4, 9, 2, 2, 8, True, seed=6)
    want = run(scan_autograd, inputs, weights, g_last, use_probs, use_last)
    got = run(cpp.scan_kernel, inputs, weights, g_last, use_probs, use_last)
    assert_close(got, want, 1e-10)


def test_large_phases_use_exact_trig():
    # |phi| beyond the polynomial range reduction falls back to libm per row
    inputs, weights, g_last = problem(3, 5, 2, 1, 8, True, seed=7, scale=3e5)
    assert_close(run(cpp.scan_kernel, inputs, weights, g_last),
                 run(scan_autograd, inputs, weights, g_last), 1e-9)


def test_renormalisation_matches_pytorch_forward():
    every = getattr(torch_engine, "RENORM_EVERY", 0)
    if not every:
        pytest.skip("the PyTorch path does not renormalise")
    inputs, _, _ = problem(3, 2 * every + 5, 2, 2, 8, True, seed=11)
    inputs[0] = 1.7 * inputs[0]  # not normalised: the rescaling shows
    got = cpp.scan_kernel(*inputs)
    want = torch_engine.scan_autograd(*inputs)
    assert_close(got, want, 1e-10)
    assert (got[1].pow(2).sum((-1, -2)) - 1).abs().max() < 1e-12


def test_gradcheck():
    inputs, _, _ = problem(2, 3, 2, 2, 4, True, seed=8)
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    assert torch.autograd.gradcheck(cpp.scan_kernel, leaves, eps=1e-6, atol=1e-7)


def test_expanded_and_partial_requires_grad():
    inputs, weights, g_last = problem(4, 6, 2, 1, 8, False, seed=9)
    psi0, phases, w, _, _ = inputs
    psi_b = psi0[:1].expand(4, -1, -1, -1)  # a broadcast initial state, not contiguous
    phases = phases.clone().requires_grad_()
    p1, l1 = cpp.scan_kernel(psi_b, phases, w)
    p2, l2 = scan_autograd(psi_b, phases, w)
    g1 = torch.autograd.grad((p1 * weights).sum(), phases)[0]
    g2 = torch.autograd.grad((p2 * weights).sum(), phases)[0]
    assert_close([p1, l1, g1], [p2, l2, g2], 1e-10)


def test_scan_dispatch():
    inputs, weights, g_last = problem(3, 5, 2, 1, 8, True, seed=10)
    want = run(scan_autograd, inputs, weights, g_last)
    for mode in ("auto", "kernel"):
        got = run(lambda *a, m=mode: scan(*a, backward=m), inputs, weights, g_last)
        assert_close(got, want, 1e-10)
    with pytest.raises(ValueError, match="backward must be one of"):
        scan(*inputs, backward="nope")
    with pytest.raises(ValueError):
        cpp.scan_kernel(inputs[0].float(), *inputs[1:])  # mixed dtypes


def _mapped_problem(read, seed, r=2, f=5, fr=3, n=4):
    """A scan given angles and phase maps: (psi0, angles, w, read angles, w_read, maps)
    in float64, random maps and offsets (the kernel's general case, not only the layer's)."""
    g = torch.Generator().manual_seed(seed)
    inputs, _, _ = problem(3, 9, 2, r, 2**n, read, seed=seed)
    psi0, phases, w, _, w_read = inputs
    b, length, h = phases.shape[:3]
    angles = torch.randn(b, length, h, f, generator=g, dtype=torch.float64)
    pmap = torch.randn(r, f, 2**n, generator=g, dtype=torch.float64)
    poff = torch.randn(r, 2**n, generator=g, dtype=torch.float64)
    rangles = rmap = roff = None
    if read:
        rangles = torch.randn(b, length, h, fr, generator=g, dtype=torch.float64)
        rmap = torch.randn(fr, 2**n, generator=g, dtype=torch.float64)
        roff = torch.randn(2**n, generator=g, dtype=torch.float64)
    return psi0, angles, w, rangles, w_read, (pmap, poff, rmap, roff)


@pytest.mark.parametrize("isa", ISAS, indirect=True)
@pytest.mark.parametrize("read", [True, False])
@pytest.mark.parametrize("f, fr", [(5, 3), (21, 17)])  # (the kernel sums 16 angles a block)
def test_phase_maps_match_the_expanded_phases_float64(isa, read, f, fr):
    """Angles expanded by the kernel (``maps``) give the outputs of the plain-autograd scan
    on the phases expanded in PyTorch, and the angles' gradients through that expansion."""
    from qlam.sim.scan.contract import expand_angles

    psi0, angles, w, rangles, w_read, maps = _mapped_problem(read, seed=21, f=f, fr=fr)
    leaves = [t.clone().requires_grad_() if t is not None else None
              for t in (psi0, angles, w, rangles, w_read)]
    g = torch.Generator().manual_seed(5)
    probs_w = torch.randn(3, 9, 2, 16, generator=g, dtype=torch.float64)
    last_w = torch.randn(3, 2, 2, 16, generator=g, dtype=torch.float64)

    def outputs(fn):
        probs, last = fn()
        want = [t for t in leaves if t is not None]
        grads = torch.autograd.grad((probs * probs_w).sum() + (last * last_w).sum(), want)
        return [probs, last, *grads]

    pm, po, rm, ro = maps
    got = outputs(lambda: cpp.scan_kernel(*leaves, maps=maps))
    want = outputs(lambda: scan_autograd(
        leaves[0], expand_angles(leaves[1], pm, po), leaves[2],
        None if rm is None else expand_angles(leaves[3], rm, ro), leaves[4]))
    assert_close(got, want, 1e-10)


def test_phase_maps_gradcheck():
    psi0, angles, w, rangles, w_read, maps = _mapped_problem(True, seed=22, f=3, fr=2)
    leaves = [t.clone().requires_grad_() for t in (psi0, angles, w, rangles, w_read)]
    assert torch.autograd.gradcheck(lambda *a: cpp.scan_kernel(*a, maps=maps), leaves,
                                    eps=1e-6, atol=1e-7)


def test_phase_maps_fake_implementations():
    """torch.compile's view of the operators with maps: angles in, phases' shapes out."""
    psi0, angles, w, rangles, w_read, maps = _mapped_problem(True, seed=24)
    args = (psi0, angles, w, rangles, w_read, 4, *maps)
    probs, last = torch.ops.qlam.scan_forward(*args)
    torch.library.opcheck(torch.ops.qlam.scan_forward.default, args,
                          test_utils="test_faketensor")
    torch.library.opcheck(torch.ops.qlam.scan_backward.default,
                          (last, angles, w, rangles, w_read, torch.ones_like(probs), None, *maps),
                          test_utils="test_faketensor")


def test_phase_maps_bad_input():
    psi0, angles, w, rangles, w_read, (pm, po, rm, ro) = _mapped_problem(True, seed=23)
    with pytest.raises(ValueError, match="phase_offset must have shape"):
        cpp.scan_kernel(psi0, angles, w, rangles, w_read, maps=(pm, po[:1], rm, ro))
    with pytest.raises(ValueError, match="angles must have shape"):
        cpp.scan_kernel(psi0, angles[..., :2], w, rangles, w_read, maps=(pm, po, rm, ro))
    with pytest.raises(ValueError, match="no angles"):  # F = 0: was a reshape error in C++
        cpp.scan_kernel(psi0, angles[..., :0], w, rangles, w_read, maps=(pm[:, :0], po, rm, ro))
    with pytest.raises(ValueError, match="read angles must have shape"):
        cpp.scan_kernel(psi0, angles, w, rangles[..., :1], w_read, maps=(pm, po, rm, ro))
    with pytest.raises(ValueError, match="read_map and read_offset"):
        cpp.scan_kernel(psi0, angles, w, rangles, w_read, maps=(pm, po, rm, None))
    with pytest.raises(ValueError, match="read_map needs read angles"):
        cpp.scan_kernel(psi0, angles, w, None, None, maps=(pm, po, rm, ro))
    with pytest.raises(ValueError, match="maps are constants"):
        cpp.scan_kernel(psi0, angles, w, rangles, w_read,
                        maps=(pm.requires_grad_(), po, rm, ro))
    with pytest.raises(ValueError, match=r"maps must be \(phase_map"):
        cpp.scan_kernel(psi0, angles, w, rangles, w_read, maps=(pm, po))
    with pytest.raises(ValueError, match="w must have shape"):
        cpp.scan_kernel(psi0, angles, w[:, :1], rangles, w_read, maps=(pm.detach(), po, rm, ro))


@pytest.mark.parametrize("read", [True, False])
def test_fake_implementations_give_the_kernels_shapes(read):
    """torch.compile traces the kernel through its fake implementations: opcheck compares
    their shapes and dtypes with the real outputs', forward and backward (without a readout
    basis the backward's two empty gradients must not alias each other, as the real op's do
    not)."""
    inputs, _, g_last = problem(3, 5, 2, 2, 4, read, seed=11)
    probs, last = torch.ops.qlam.scan_forward(*inputs, 4)
    torch.library.opcheck(torch.ops.qlam.scan_forward.default, (*inputs, 4),
                          test_utils="test_faketensor")
    psi0, phases, w, rp, wr = inputs
    torch.library.opcheck(torch.ops.qlam.scan_backward.default,
                          (last, phases, w, rp, wr, torch.ones_like(probs), g_last),
                          test_utils="test_faketensor")


def test_both_kernels_are_found_and_built():
    """The mixed memory's channel kernel sits beside the recurrence kernel (qlam/csrc) and
    builds wherever that one does: a wrong path would fall back to the slow loop silently."""
    from qlam.sim.scan import channel

    assert channel.SOURCE.parent == cpp.SOURCE.parent and channel.SOURCE.is_file()
    assert channel._extension() is not None


@pytest.mark.parametrize("present", ["library", "marker"])
def test_a_half_built_extension_is_built_again(tmp_path, monkeypatch, present):
    """Only the marker ``ok`` written after a complete build, with the library, is reused:
    either one alone (a build killed midway, a cleaned library) means build again."""
    from torch.utils import cpp_extension

    monkeypatch.setenv("QLAM_EXT_DIR", str(tmp_path))
    where = cpp.build_dir()
    where.mkdir(parents=True)
    (where / ("ok" if present == "marker" else f"{where.name}.so")).write_text("")
    built = []
    monkeypatch.setattr(cpp_extension, "load", lambda **kw: built.append(kw["name"]) or "module")
    monkeypatch.setattr(cpp.shutil, "which", lambda name: "/usr/bin/" + name)
    assert cpp.build() == "module"
    assert built == [where.name]
    assert (where / "ok").read_text().strip() == str(where / f"{where.name}.so")


def test_no_compiler_falls_back_with_one_warning(tmp_path):
    code = (
        "import warnings, torch\n"
        "warnings.simplefilter('always')\n"
        "with warnings.catch_warnings(record=True) as ws:\n"
        "    from qlam.sim.scan import cpp\n"
        "    from qlam.sim.scan import scan\n"
        "    ok = cpp.available() or cpp.available()\n"
        "    psi = torch.zeros(1, 1, 2, 2); psi[..., 0, 0] = 1\n"
        "    w = torch.zeros(1, 1, 2, 2, 2); w[:, :, 0] = torch.eye(2)\n"
        "    probs, _ = scan(psi, torch.zeros(1, 3, 1, 1, 2), w)\n"
        "msgs = [str(w.message) for w in ws]\n"
        "print(ok, len(msgs), float(probs.sum()))\n"
        "print(msgs[0])\n"
    )
    env = dict(os.environ, CXX=str(tmp_path / "no-such-compiler"),
               QLAM_EXT_DIR=str(tmp_path / "ext"))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    first, message = out.stdout.strip().splitlines()
    assert first == "False 1 3.0"
    assert "kernel unavailable" in message and "no C++ compiler" in message
    assert "\n" not in message


def test_a_build_lock_left_by_a_killed_builder_is_cleared(tmp_path, monkeypatch):
    """torch's builder waits forever on its lock file if a builder was killed mid-build;
    under qlam's OS lock that file can only be stale, so the build goes ahead."""
    from pathlib import Path

    from torch.utils import cpp_extension

    monkeypatch.setenv("QLAM_EXT_DIR", str(tmp_path / "ext"))
    source = tmp_path / "tiny.cpp"
    source.write_text("// a source\n")
    where = cpp.build_dir(source)
    where.mkdir(parents=True)
    (where / "lock").touch()  # what a killed build leaves
    seen = []

    def fake_load(name, build_directory, **_):
        seen.append((Path(build_directory) / "lock").exists())
        (Path(build_directory) / f"{name}.so").write_bytes(b"")
        return "built"

    monkeypatch.setattr(cpp_extension, "load", fake_load)
    assert cpp.build(source) == "built"
    assert seen == [False] and (where / "ok").read_text().strip().endswith(".so")


@pytest.mark.skipif(not {"avx512", "avx2"} & set(ISAS),
                    reason="the breakdown script times the AVX-512 or AVX2 build")
@pytest.mark.parametrize("layer", [[], ["layer"]])
def test_breakdown_script_times_the_kernel_source(layer):
    """scripts/kernel_breakdown.sh compiles the kernel's own task loops without torch: it must
    keep building against the current source and report every part (with "layer": the QLAM
    layer's call, 8 heads with phase maps and a readout)."""
    script = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "kernel_breakdown.sh")
    out = subprocess.run(["bash", script, "5", "8", "16", *layer], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line for line in out.stdout.splitlines() if line}
    for part in ("peak", "cmul", "couter", "fwd", "bwd", "train"):
        assert part in rows, out.stdout
    assert "GFLOP/s" in rows["fwd"] and "% of peak" in rows["bwd"]
    assert ("the QLAM layer's call" in out.stdout) == bool(layer)
