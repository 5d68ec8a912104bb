"""Datasets in, tokenized splits out: reading files as written (`read`), fingerprints of what the
data came from (`fingerprint`), splits (`splits`) and the tokenization cache (`tokenized`)."""

from orchestrator.data.read import DataError, read_table
from orchestrator.data.splits import Splits, load_saved_splits, load_splits, save_splits
from orchestrator.data.tokenized import tokenize, tokenizer_fingerprint

__all__ = ["DataError", "Splits", "load_saved_splits", "load_splits", "read_table", "save_splits", "tokenize",
           "tokenizer_fingerprint"]
