"""The dispatcher: which engine runs the scan, and with which gradient method.

Engines (each a module with ``supports(*tensors)``, ``run(..., gradient)`` and the
``GRADIENTS`` it offers; none imports this module):

- ``"torch"`` (:mod:`~qlam.sim.scan.torch_engine`): any device; gradients ``"adjoint"``
  (the reversible walk, O(1) activation memory in L) and ``"autograd"``;
- ``"cpp"`` (:mod:`~qlam.sim.scan.cpp`): CPU, float32/float64, built on first use; ``"adjoint"``;
- ``"triton"`` (:mod:`~qlam.sim.scan.triton_engine`): CUDA, 4..6 qubits; ``"adjoint"``;
- ``"auto"``: the compiled engine for the tensors' device where it applies (the C++ kernel
  where it builds; Triton where its once-per-specialisation self-test passed), else
  ``"torch"``. ``gradient="autograd"`` always runs the torch engine.

Evaluation-only engines with other signatures live beside them: noisy trajectories
(:mod:`~qlam.sim.scan.noisy`) and density matrices (:mod:`~qlam.sim.scan.density`).

``backward`` is the older single switch, kept because the QLAM layer's ``backward=`` option
uses it: ``"kernel"`` = the compiled engine for the device, ``"reversible"`` = torch +
adjoint, ``"autograd"`` = torch + autograd, ``"auto"`` = auto + adjoint.
"""

from __future__ import annotations

from qlam.sim.scan import cpp, torch_engine
from qlam.sim.scan.contract import check_inputs

ENGINES = ("auto", "torch", "cpp", "triton")
GRADIENTS = ("adjoint", "autograd")
BACKWARDS = {"auto": ("auto", "adjoint"), "kernel": ("compiled", "adjoint"),
             "reversible": ("torch", "adjoint"), "autograd": ("torch", "autograd")}


def _triton():
    from qlam.sim.scan import triton_engine  # imports Triton (slow): only for CUDA tensors

    return triton_engine


def resolve(backward: str) -> tuple[str, str]:
    """(engine, gradient) of a ``backward`` name; engine "compiled" means the device's one."""
    if backward not in BACKWARDS:
        raise ValueError(f"backward must be one of {tuple(BACKWARDS)}, got {backward!r}")
    return BACKWARDS[backward]


def pick_engine(engine: str, gradient: str, tensors) -> str:
    """The engine that will run: ``engine`` itself, or for "auto" / "compiled" the one the
    tensors' device and this installation allow."""
    if engine not in (*ENGINES, "compiled"):
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if gradient not in GRADIENTS:
        raise ValueError(f"gradient must be one of {GRADIENTS}, got {gradient!r}")
    cuda = tensors[1].is_cuda
    if engine == "compiled":
        return "triton" if cuda else "cpp"
    if engine != "auto":
        return engine
    if gradient != "adjoint":
        return "torch"
    if cuda:
        return "triton" if _triton().trusted(*tensors) else "torch"
    return "cpp" if cpp.supports(*tensors) and cpp.available() else "torch"


def scan(psi0, phases, w, read_phases=None, w_read=None, backward: str | None = None, *,
         engine: str = "auto", gradient: str = "adjoint"):
    """Run the scan (shapes in :mod:`qlam.sim.scan.contract`): probs (B, L, H, N) and the
    final state (B, H, 2, N). Choose ``engine`` and ``gradient``, or the older ``backward``
    (see the module docstring). An engine asked for by name that cannot take the tensors
    raises a ValueError (RuntimeError if it cannot be built here)."""
    if backward is not None:
        engine, gradient = resolve(backward)
    args = (psi0, phases, w, read_phases, w_read)
    check_inputs(*args)
    name = pick_engine(engine, gradient, args)
    module = {"torch": torch_engine, "cpp": cpp}.get(name) or _triton()
    if gradient not in module.GRADIENTS:
        raise ValueError(f"the {name} engine offers gradient(s) {tuple(module.GRADIENTS)}, "
                         f"not {gradient!r}")
    return module.run(*args, gradient=gradient)


__all__ = ["ENGINES", "GRADIENTS", "BACKWARDS", "resolve", "pick_engine", "scan"]
