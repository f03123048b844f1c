import enum

from torchvision._unavailable import Unavailable


class InterpolationMode(enum.Enum):
    NEAREST = "nearest"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"


Compose = ToTensor = Normalize = Grayscale = CenterCrop = Resize = Unavailable
