import pytest

from qlam.sim.scan import cpp


@pytest.fixture
def isa(request):
    """Run the kernel's ``request.param`` variant (one of kernel_isas.ISAS) for one test."""
    cpp.set_isa(request.param)
    yield request.param
    cpp.set_isa("auto")
