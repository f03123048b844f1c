"""Names that exist for imports; using one raises."""


class Unavailable:
    def __init__(self, *args, **kwargs):
        raise RuntimeError("torchvision is a stand-in in this environment (qlam benchmark)")


def unavailable(*args, **kwargs):
    raise RuntimeError("torchvision is a stand-in in this environment (qlam benchmark)")
