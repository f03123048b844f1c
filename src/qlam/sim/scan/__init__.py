"""The quantum-memory scan: one contract (:mod:`~qlam.sim.scan.contract`), engines that
implement it (torch reference, C++, Triton, noisy trajectories, density matrices) and the
dispatcher (:mod:`~qlam.sim.scan.dispatch`) that picks an engine and a gradient method."""

from qlam.sim.scan.contract import RENORM_EVERY, check_inputs, random_unitaries, real_form
from qlam.sim.scan.dispatch import BACKWARDS, ENGINES, GRADIENTS, scan

__all__ = ["scan", "ENGINES", "GRADIENTS", "BACKWARDS", "RENORM_EVERY", "check_inputs",
           "random_unitaries", "real_form"]
