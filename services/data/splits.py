"""The deterministic split: a row's split follows from a hash of its content alone.

The same row always lands in the same split, whatever the file's row order, the other
rows or the upload, and duplicated rows land together (no leak from train to test)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

from services.data.entities import SplitRatios


def hash_rows(keys: Iterable[bytes]) -> np.ndarray:
    """A 64-bit BLAKE2b hash of each row's key (its content), as uint64."""
    digests = b"".join(hashlib.blake2b(key, digest_size=8).digest() for key in keys)
    return np.frombuffer(digests, dtype="<u8")


def assign_splits(row_hashes: np.ndarray, ratios: SplitRatios) -> np.ndarray:
    """Each row's split as an index into SPLITS: its hash as a fraction of 2**64 falls in
    [0, train) for train, [train, train + validation) for validation, the rest test."""
    fractions = (row_hashes >> np.uint64(11)).astype(np.float64) * 2.0**-53
    bounds = np.array([ratios.train, ratios.train + ratios.validation])
    return np.searchsorted(bounds, fractions, side="right").astype(np.int8)
