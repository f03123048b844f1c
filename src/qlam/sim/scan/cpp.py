"""The C++ engine (``qlam/csrc/recurrence.cpp``), loaded on demand.

The contract of :mod:`qlam.sim.scan.contract` (shapes there); the
forward runs the whole sequence in C++ (OpenMP over heads and batch tiles, a cache-resident
register-blocked GEMM per token; complex products as three real GEMMs where N allows) and the
backward is the reversible (adjoint) walk, also in C++: no stored history, the gradient of
every unitary accumulated per thread and reduced at the end.

A third entry, ``step``, is one token of the whole QLAM layer without gradients (input
projections, the token's circuit, the readout and the output projection in one call): what
``QLAM.step`` runs when streaming under ``torch.no_grad()`` (:meth:`qlam.memory.QLAM.step`).

The kernel is registered as two PyTorch custom operators, ``torch.ops.qlam.scan_forward`` and
``qlam.scan_backward`` (``torch.library.custom_op`` with fake implementations and the autograd
pairing), so ``torch.compile`` (``fullgraph=True`` included) traces a QLAM model into one graph
that calls the kernel as a single op.

Build: the first use compiles the extension just in time with ``torch.utils.cpp_extension``
into ``$QLAM_EXT_DIR`` (default ``~/.cache/qlam/ext``), in a folder named by a hash of the
source, the flags and the torch / Python versions, so it is built once and reused by every
later process. Concurrent first uses build it once: each builder holds an OS lock
(``fcntl.flock`` on ``<folder>.flock``, released when its process dies), and under it clears
the lock file torch's own builder leaves behind when it is killed mid-build (which would
otherwise make every later process wait for it forever). ``python -m
qlam.sim.scan.cpp`` builds it ahead of time. The code is compiled without ``-march``: the hot
loops exist in baseline, AVX2 and AVX-512 variants chosen at run time, so a shared cache
works across machines.

Without a compiler (or if the build fails) :func:`available` is False, one warning says why,
and ``scan(..., engine="auto")`` falls back to the PyTorch engine.
``QLAM_KERNEL=0`` disables the kernel.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import shutil
import sys
import threading
import warnings
from pathlib import Path

import torch

from qlam.atomic import atomic_write_text
from qlam.sim.scan.contract import RENORM_EVERY, check_inputs, check_maps, one_float_dtype

SOURCE = Path(__file__).resolve().parents[2] / "csrc" / "recurrence.cpp"
CFLAGS = ["-O3", "-ffp-contract=fast", "-fopenmp", "-Wno-psabi"]
LDFLAGS = ["-fopenmp"]

_lock = threading.Lock()
_ext = None
_error: str | None = None
_tried = False


def build_dir(source: Path = SOURCE) -> Path:
    """Where an extension is built: $QLAM_EXT_DIR or ~/.cache/qlam/ext, one folder per
    (source, flags, torch, Python) combination."""
    root = os.environ.get("QLAM_EXT_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "qlam", "ext")
    return Path(root) / _tag(source)


def _tag(source: Path) -> str:
    h = hashlib.sha256()
    h.update(source.read_bytes())
    h.update(" ".join(CFLAGS + LDFLAGS).encode())
    h.update(f"{torch.__version__} {sys.version_info[:2]} {sys.platform}".encode())
    return f"{source.stem}_" + h.hexdigest()[:16]


def _import(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ensure_ninja_on_path() -> None:
    """torch's JIT build runs ``ninja`` from PATH; the venv's ninja may not be on it."""
    if shutil.which("ninja"):
        return
    dirs = [os.path.dirname(sys.executable)]
    try:
        import ninja  # the pip package

        dirs.insert(0, ninja.BIN_DIR)
    except (ImportError, AttributeError):
        pass
    for d in dirs:
        if os.path.exists(os.path.join(d, "ninja")):
            os.environ["PATH"] = d + os.pathsep + os.environ.get("PATH", "")
            return


def build(source: Path = SOURCE, verbose: bool = False):
    """Compile ``source`` (a torch C++ extension in qlam/csrc) once and import it."""
    from torch.utils import cpp_extension

    where = build_dir(source)
    name = where.name
    lib = where / f"{name}.so"
    ok = where / "ok"
    if ok.exists() and lib.exists():  # built and loaded before: no compiler or ninja needed
        return _import(name, lib)
    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:
        raise RuntimeError(f"no C++ compiler ({cxx!r} not on PATH)")
    _ensure_ninja_on_path()
    where.mkdir(parents=True, exist_ok=True)
    with _builder_lock(where):
        if ok.exists() and lib.exists():  # built by another process while this one waited
            return _import(name, lib)
        # torch's baton file: only a builder killed mid-build can have left it (every live
        # builder holds the OS lock), and torch would wait on it forever
        (where / "lock").unlink(missing_ok=True)
        module = cpp_extension.load(name=name, sources=[str(source)],
                                    extra_cflags=list(CFLAGS), extra_ldflags=list(LDFLAGS),
                                    build_directory=str(where), verbose=verbose)
        atomic_write_text(ok, f"{lib}\n")  # never a half-built library marked usable
    return module


@contextlib.contextmanager
def _builder_lock(where: Path):
    """An exclusive OS lock on ``<where>.flock`` (released by the OS if the holder dies);
    without ``fcntl`` (not POSIX), no lock beyond torch's own."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(where.with_name(where.name + ".flock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def load(verbose: bool = False):
    """The extension module (built on first use), or None with :func:`error` set."""
    global _ext, _error, _tried
    if _ext is not None:  # loaded: no lock (streaming calls this once per token)
        return _ext
    with _lock:
        if _tried:
            return _ext
        _tried = True
        if os.environ.get("QLAM_KERNEL", "1").strip().lower() in ("0", "false", "no", "off"):
            _error = "disabled by QLAM_KERNEL=0"
            return None
        try:
            _ext = build(verbose=verbose)
        except Exception as e:  # noqa: BLE001 - any build failure means: fall back
            first = (str(e).strip().splitlines() or [type(e).__name__])[-1][:300]
            _error = f"{type(e).__name__}: {first}"
            warnings.warn(f"qlam: compiled recurrence kernel unavailable ({_error}); using the "
                          f"pure-PyTorch path", RuntimeWarning, stacklevel=3)
        return _ext


@torch.compiler.assume_constant_result
def available() -> bool:
    """True when the compiled kernel is built and loadable (builds it on first call)."""
    return load() is not None


def error() -> str | None:
    """Why the kernel is unavailable (None when it is available or not yet tried)."""
    return _error


def isa() -> str | None:
    """The instruction set the kernel uses here (base, avx2 or avx512), None if unavailable."""
    ext = load()
    return None if ext is None else ext.isa()


def set_isa(name: str) -> str:
    """Force an instruction-set variant ("base", "avx2", "avx512" or "auto"); for tests."""
    ext = load()
    if ext is None:
        raise RuntimeError(f"kernel unavailable: {_error}")
    return ext.set_isa(name)


def set_gauss(on: bool) -> None:
    """Use (default) or not the three-multiplication complex product where N allows it; for
    tests and benchmarks."""
    ext = load()
    if ext is None:
        raise RuntimeError(f"kernel unavailable: {_error}")
    ext.set_gauss(bool(on))


def supports(*tensors) -> bool:
    """Whether the kernel can run on these tensors (CPU, float32/float64, one dtype); says
    nothing of whether it builds here (:func:`available`)."""
    return all(t.device.type == "cpu" for t in tensors if t is not None) and one_float_dtype(*tensors)


# The kernel as two PyTorch custom operators (torch.library): torch.compile sees each as one
# op (its fake implementation gives the output shapes), and autograd pairs them.
# Optional phase maps (the kernel's maps): with phase_map (R, F, N) and phase_offset (R, N),
# ``phases`` are angles (B, L, H, F) and the kernel expands every row to the phases
# offset + angles . map itself (read_map (Fr, N), read_offset (N): read angles (B, L, H, Fr));
# the gradients returned are then the angles'. The maps are constants (no gradient).
@torch.library.custom_op("qlam::scan_forward", mutates_args=())
def scan_forward(psi0: torch.Tensor, phases: torch.Tensor, w: torch.Tensor,
                 read_phases: torch.Tensor | None, w_read: torch.Tensor | None,
                 renorm_every: int, phase_map: torch.Tensor | None = None,
                 phase_offset: torch.Tensor | None = None, read_map: torch.Tensor | None = None,
                 read_offset: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """probs (B, L, H, N), last (B, H, 2, N); the state is renormalised every
    ``renorm_every`` tokens (0: never)."""
    probs, last = load().forward(psi0, phases, w, read_phases, w_read, renorm_every,
                                 phase_map, phase_offset, read_map, read_offset)
    return probs, last


@scan_forward.register_fake
def _(psi0, phases, w, read_phases, w_read, renorm_every, phase_map=None, phase_offset=None,
      read_map=None, read_offset=None):
    b, length, h, n = *phases.shape[:3], w.shape[-1]
    return phases.new_empty(b, length, h, n), psi0.new_empty(b, h, 2, n)


@torch.library.custom_op("qlam::scan_backward", mutates_args=())
def scan_backward(last: torch.Tensor, phases: torch.Tensor, w: torch.Tensor,
                  read_phases: torch.Tensor | None, w_read: torch.Tensor | None,
                  g_probs: torch.Tensor | None, g_last: torch.Tensor | None,
                  phase_map: torch.Tensor | None = None, phase_offset: torch.Tensor | None = None,
                  read_map: torch.Tensor | None = None, read_offset: torch.Tensor | None = None,
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The reversible backward: gradients of psi0, phases, w, read_phases, w_read (the last
    two empty without a readout basis)."""
    g_psi0, g_ph, g_w, g_rph, g_wr = load().backward(last, phases, w, read_phases, w_read,
                                                     g_probs, g_last, phase_map, phase_offset,
                                                     read_map, read_offset)
    if read_phases is None:
        g_rph, g_wr = phases.new_empty(0), phases.new_empty(0)
    return g_psi0, g_ph, g_w, g_rph, g_wr


@scan_backward.register_fake
def _(last, phases, w, read_phases, w_read, g_probs, g_last, phase_map=None, phase_offset=None,
      read_map=None, read_offset=None):
    # (no readout basis: two distinct empty tensors, as the real op returns; outputs that
    # alias each other would be a different op to torch.compile)
    return (last.new_empty(last.shape), phases.new_empty(phases.shape), w.new_empty(w.shape),
            phases.new_empty(0) if read_phases is None else read_phases.new_empty(read_phases.shape),
            phases.new_empty(0) if w_read is None else w_read.new_empty(w_read.shape))


def _setup_context(ctx, inputs, output):
    psi0, phases, w, read_phases, w_read, _, *maps = inputs
    ctx.save_for_backward(output[1], phases, w, read_phases, w_read, *maps)
    ctx.has_read = read_phases is not None
    ctx.set_materialize_grads(False)  # unused probs: None, not a (B, L, H, N) tensor of zeros


def _backward(ctx, g_probs, g_last):
    last, phases, w, read_phases, w_read, *maps = ctx.saved_tensors
    g_psi0, g_ph, g_w, g_rph, g_wr = scan_backward(last, phases, w, read_phases, w_read,
                                                   g_probs, g_last, *maps)
    if not ctx.has_read:
        g_rph = g_wr = None
    return g_psi0, g_ph, g_w, g_rph, g_wr, None, None, None, None, None


scan_forward.register_autograd(_backward, setup_context=_setup_context)


def scan_kernel(psi0, phases, w, read_phases=None, w_read=None, maps=None):
    """The scan on the compiled kernel, adjoint gradients: probs (B, L, H, N), last (B, H, 2, N).

    ``maps`` (phase_map (R, F, N), phase_offset (R, N), read_map (Fr, N) or None, read_offset
    (N,) or None): ``phases`` are then angles (B, L, H, F) (``read_phases`` (B, L, H, Fr)
    with a read map) that the kernel expands to phases
    (:func:`~qlam.sim.scan.contract.expand_angles`) as it streams them, so no
    (B, L, H, R, N) tensor is built, and returns the angles' gradients."""
    if maps is None:
        check_inputs(psi0, phases, w, read_phases, w_read)
        maps = (None,) * 4
    else:
        check_maps(psi0, phases, w, read_phases, w_read, maps)
    if not available():
        raise RuntimeError(f"compiled recurrence kernel unavailable: {_error}")
    if not supports(psi0, phases, w, read_phases, w_read, *maps):
        raise ValueError("the compiled kernel needs CPU tensors of one dtype, float32 or float64")
    # the same periodic renormalisation as the PyTorch engine (identity in the backward)
    if not torch.is_grad_enabled() and not torch.compiler.is_compiling():
        # inference (streaming with step()): the extension directly, without the operator
        # dispatch, which costs more than a one-token scan
        probs, last = load().forward(psi0, phases, w, read_phases, w_read, RENORM_EVERY, *maps)
        return probs, last
    return scan_forward(psi0, phases, w, read_phases, w_read, RENORM_EVERY, *maps)


# The gate-factored scan (W_r = P_r (U_0 ⊗ ... ⊗ U_{n-1}), recurrence.cpp) as two more
# operators, paired the same way.
FACTORED_LOW_QUBITS = 4  # the kernel applies the last 4 wires in registers: it needs n >= 4


@torch.library.custom_op("qlam::factored_forward", mutates_args=())
def factored_forward(psi0: torch.Tensor, phases: torch.Tensor, gates: torch.Tensor,
                     inv: torch.Tensor, renorm_every: int,
                     phase_map: torch.Tensor | None = None,
                     phase_offset: torch.Tensor | None = None,
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """probs (B, L, H, N), last (B, H, 2, N) of the factored scan; with ``phase_map``
    (R, F, N) and ``phase_offset`` (R, N), ``phases`` are angles (B, L, H, F) that the kernel
    expands to ``offset + angles . map`` per layer; with per-wire maps (R, F, n + 1) and
    (R, n + 1) (:func:`qlam.sim.lowering.wire_form` of separable phases) it folds each wire's
    phase into its gate instead."""
    probs, last = load().factored_forward(psi0, phases, gates, inv, renorm_every, phase_map,
                                          phase_offset)
    return probs, last


@factored_forward.register_fake
def _(psi0, phases, gates, inv, renorm_every, phase_map=None, phase_offset=None):
    b, length, h = phases.shape[:3]
    n = psi0.shape[-1]
    return phases.new_empty(b, length, h, n), psi0.new_empty(b, h, 2, n)


@torch.library.custom_op("qlam::factored_backward", mutates_args=())
def factored_backward(last: torch.Tensor, phases: torch.Tensor, gates: torch.Tensor,
                      inv: torch.Tensor, g_probs: torch.Tensor | None,
                      g_last: torch.Tensor | None, phase_map: torch.Tensor | None = None,
                      phase_offset: torch.Tensor | None = None,
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The reversible backward: gradients of psi0, phases (the angles with a map), gates and
    the phase offset (its shape: (R, N), or (R, n + 1) per wire; empty without a map)."""
    out = load().factored_backward(last, phases, gates, inv, g_probs, g_last, phase_map,
                                   phase_offset)
    return tuple(out)


@factored_backward.register_fake
def _(last, phases, gates, inv, g_probs, g_last, phase_map=None, phase_offset=None):
    return (last.new_empty(last.shape), phases.new_empty(phases.shape),
            gates.new_empty(gates.shape),
            phases.new_empty(0) if phase_offset is None else phase_offset.new_empty(
                phase_offset.shape))


def _factored_setup(ctx, inputs, output):
    _, phases, gates, inv, _, *maps = inputs
    ctx.save_for_backward(output[1], phases, gates, inv, *maps)
    ctx.mapped = maps[0] is not None
    ctx.set_materialize_grads(False)  # unused probs: None, not a (B, L, H, N) tensor of zeros


def _factored_backward(ctx, g_probs, g_last):
    last, phases, gates, inv, *maps = ctx.saved_tensors
    g_psi0, g_ph, g_gates, g_off = factored_backward(last, phases, gates, inv, g_probs, g_last,
                                                     *maps)
    return g_psi0, g_ph, g_gates, None, None, None, g_off if ctx.mapped else None


factored_forward.register_autograd(_factored_backward, setup_context=_factored_setup)


def factored_inputs(gates: torch.Tensor, perms, dtype: torch.dtype):
    """The kernel's form of layers ``W_r = P_r (gates[:, r, 0] ⊗ ... ⊗ gates[:, r, n-1])``:
    gates (H, R, n, 2, 2) complex, perms (one (N,) row gather or None per layer) ->
    (the gates (H, R, n, 2, 2, 2) as [re, im] planes in ``dtype``, inv (R, N) the inverse
    permutations). Differentiable in gates."""
    n = gates.shape[2]
    if n < FACTORED_LOW_QUBITS:
        raise ValueError(f"the factored kernel needs >= {FACTORED_LOW_QUBITS} qubits, got {n}")
    arange = torch.arange(2**n)
    inv = torch.stack([arange if p is None else torch.argsort(p.cpu()) for p in perms])
    return torch.stack([gates.real, gates.imag], -3).to(dtype), inv


def scan_factored_kernel(psi0, phases, gates, inv, maps=None):
    """The factored scan on the compiled kernel (inputs from :func:`factored_inputs`; the
    other shapes in :mod:`~qlam.sim.scan.contract`), adjoint gradients: probs (B, L, H, N),
    last (B, H, 2, N). ``maps`` (phase_map (R, F, N), phase_offset (R, N), or per wire
    (R, F, n + 1), (R, n + 1)): ``phases`` are then angles (B, L, H, F) that the kernel
    expands as it runs, so no (B, L, H, R, N) tensor is built; the angles and the offset get
    gradients (the map is a constant)."""
    maps = (None, None) if maps is None else tuple(maps)
    if not available():
        raise RuntimeError(f"compiled recurrence kernel unavailable: {_error}")
    if not supports(psi0, phases, gates, *maps):
        raise ValueError("the compiled kernel needs CPU tensors of one dtype, float32 or float64")
    if not torch.is_grad_enabled() and not torch.compiler.is_compiling():
        probs, last = load().factored_forward(psi0, phases, gates, inv, RENORM_EVERY, *maps)
        return probs, last
    return factored_forward(psi0, phases, gates, inv, RENORM_EVERY, *maps)


GRADIENTS = {"adjoint": scan_kernel}


def run(psi0, phases, w, read_phases=None, w_read=None, gradient: str = "adjoint"):
    return GRADIENTS[gradient](psi0, phases, w, read_phases, w_read)


if __name__ == "__main__":  # python -m qlam.sim.scan.cpp: build now, report
    if load(verbose="-v" in sys.argv) is None:
        print(f"qlam kernel: unavailable ({_error})")
        sys.exit(1)
    print(f"qlam kernel: {build_dir()} isa={isa()} threads={_ext.num_threads()}")
