"""The C++ kernel's instruction-set variants this CPU can run (the best one last; none without
the kernel), for tests parametrized over them with the ``isa`` fixture of tests/sim."""

from qlam.sim.scan import cpp


def _isas() -> list[str]:
    if not cpp.available():
        return []
    best = cpp.set_isa("auto")
    order = ["base", "avx2", "avx512"]
    return order[: order.index(best) + 1]


ISAS = _isas()
