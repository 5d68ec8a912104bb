"""Datasets in, tokenized splits out: reading, fingerprints, splits, the tokenization cache.

`read` reads files as written (csv, tsv, jsonl, parquet; `pkg://`, `s3://`) and says which cells
are missing; `fingerprint` records what the data came from; `splits` makes and saves them;
`tokenized` tokenizes once per study; `batching` groups rows of similar length; `missing_rows`
is the one rule for rows without a text in every prediction path.
"""

from orchestrator.data.read import DataError, read_table
from orchestrator.data.splits import Splits, load_saved_splits, load_splits, save_splits
from orchestrator.data.tokenized import tokenize, tokenizer_fingerprint

__all__ = ["DataError", "Splits", "load_saved_splits", "load_splits", "read_table", "save_splits", "tokenize",
           "tokenizer_fingerprint"]
