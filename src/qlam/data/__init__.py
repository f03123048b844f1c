"""Datasets for qlam: verified fetch/cache/import and sequence tasks."""

from qlam.data.sources import DATASETS, SUMS, DataError, cache_dir, fetch, import_dir, info, load

__all__ = ["DATASETS", "SUMS", "DataError", "cache_dir", "fetch", "import_dir", "info", "load"]
