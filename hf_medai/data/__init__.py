"""Loaders, one module per modality; each returns a `datasets.Dataset` and a `DataReport`."""

from hf_medai.data.report import DataError, DataReport

__all__ = ["DataError", "DataReport"]
