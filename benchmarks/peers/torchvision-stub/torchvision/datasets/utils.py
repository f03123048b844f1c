from torchvision._unavailable import unavailable

download_url = unavailable
