"""Export a mixed-memory head (``memory="mixed"``, :class:`qlam.memory.mixed.MixedQLAM`) for
one example: its channel as real gates plus resets (a
:class:`~qlam.channel_circuit.ChannelCircuit`, written as OpenQASM 2.0 on the registers
``q`` (memory), ``fresh`` and ``anc``), with the model's own density matrix.

The circuit, every angle a number (trained or derived from the example), built by
:meth:`MixedQLAM.bound_channel <qlam.memory.mixed.MixedQLAM.bound_channel>`:

1. the head's initial state on q: the prep circuit (RY, RZ per qubit, ``prep_theta[head]``);
2. per token t of the first K, the channel of :mod:`qlam.memory.mixed`:

   * V^dagger on q (the frame circuit with ``theta[head]``, inverted);
   * D(x_t) = prod_S exp(-i theta_S/2 Z_S), theta = Delta_h in_proj(x_t)[head]: RZ for a
     one-qubit string, RZZ for two, a CX ladder onto the string's last wire around an RZ for
     longer ones (bit k of the mask S is wire n-1-k);
   * phase damping on every qubit of the frame (``dephasing=True``):
     ``cry(2 arccos e^{-gamma_q}) q[q],anc[0]; reset anc[0];`` multiplies the coherences of
     qubit q by e^{-gamma_q};
   * V on q;
   * reset-and-write: ``ry(alpha_q)``, ``rz(beta_q)`` on fresh[q]; ``ry(2 asin sqrt(a_t))`` on
     anc[0]; ``cswap anc[0],q[q],fresh[q]`` for every q; reset anc and fresh. The memory
     becomes (1 - a_t) rho + a_t |s(x_t)><s(x_t)|;
3. the readout basis R on q: basis ``basis`` of the head's ``n_bases`` (the frame circuit with
   ``read_theta[head, basis]``; each basis is one measurement setting on hardware).

Tracing out fresh and anc leaves the model's density matrix; the memory's diagonal at the end
(after R) is the model's Born probabilities of token K's readout. The unitary memory's export
is :mod:`qlam.export`; `qlam export` writes either.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from qlam.channel_circuit import ChannelCircuit
from qlam.circuit import Circuit
from qlam.memory.mixed import MixedQLAM
from qlam.models.qlam import QLAMClassifier
from qlam.sim.statevector import unitary


@dataclass
class MixedHeadExport:
    """One mixed-memory head's channel circuit for one example, and the model's results."""

    circuit: ChannelCircuit  # initial state + the first ``tokens`` tokens' channels, bound
    readout: Circuit  # the readout basis R = R_basis (n qubits, bound)
    state: torch.Tensor  # (2^n, 2^n) complex128: the model's rho_K (wire 0 the top bit)
    readout_state: torch.Tensor  # (2^n, 2^n) R rho_K R^dagger: the memory at the end of measured
    readout_probabilities: torch.Tensor  # (2^n,) the model's p_K(z) = <z|R rho_K R^dagger|z>
    layer: int
    head: int
    tokens: int
    n_qubits: int
    basis: int

    @property
    def measured(self) -> ChannelCircuit:
        """The circuit whose memory register is measured: state channels, then R."""
        c = ChannelCircuit(self.n_qubits)
        c.ops = list(self.circuit.ops)
        return c.extend(self.readout)


def export_mixed_head(model, x: torch.Tensor, *, layer: int = 0, head: int = 0,
                      tokens: int | None = None, basis: int = 0) -> MixedHeadExport:
    """The bound channel circuit of head ``head`` of block ``layer`` (a MixedQLAM) for example
    x (L, n_features), over its first ``tokens`` tokens (all by default), read in readout basis
    ``basis``; see the module docstring."""
    if not isinstance(model, QLAMClassifier):
        raise TypeError(f"export needs a QLAMClassifier, got {type(model).__name__}")
    h_in = model.memory_input(x, layer).cpu().double()
    mem = model.blocks[layer].memory
    if not isinstance(mem, MixedQLAM):
        raise ValueError(f"export_mixed_head exports memory='mixed'; layer {layer} is a "
                         f"{type(mem).__name__}: use qlam.export.export_head")
    m = mem.exact_copy()
    circuit, readout, tokens = m.bound_channel(h_in, head, tokens, basis)
    head, basis = int(head), int(basis)
    with torch.no_grad():
        probs, final = m.probabilities(h_in[:, :tokens])
    n = m.n_qubits
    r = unitary(readout.ops, n)
    state = final[0, head].to(torch.complex128)
    return MixedHeadExport(circuit=circuit, readout=readout, state=state,
                           readout_state=r @ state @ r.conj().T,
                           readout_probabilities=probs[0, -1, head, basis * 2**n:][:2**n],
                           layer=layer, head=head, tokens=tokens, n_qubits=n, basis=basis)


__all__ = ["MixedHeadExport", "export_mixed_head"]
