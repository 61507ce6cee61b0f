"""Datasets: readers for the common FER layouts, decoding with problem reports, class statistics."""

from ferkit.data.readers import Dataset, DatasetError, open_dataset
from ferkit.data.samples import SPLITS, Entry, Problem, Sample, canonical_split, decode
from ferkit.data.weights import class_counts, class_weights

__all__ = [
    "SPLITS", "Dataset", "DatasetError", "Entry", "Problem", "Sample", "canonical_split", "class_counts",
    "class_weights", "decode", "open_dataset",
]
