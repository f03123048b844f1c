"""Import-only stand-in for torchvision (see ../pyproject.toml)."""

from torchvision import datasets, transforms  # noqa: F401
