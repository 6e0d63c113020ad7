"""The deterministic split: a row's split follows from a hash of its content alone.

The same row always lands in the same split, whatever the file's row order, the other
rows or the upload, and duplicated rows land together (no leak from train to test).

A tabular row (CSV, Parquet, JSON Lines) hashes its values, not its bytes: each value
becomes a 64-bit word (a number its float64 bits, -0 as 0; a category or label the first
8 bytes of the BLAKE2b digest of its text), and the words are folded column by column
through SplitMix64's finalizer, vectorized over the rows. So the same values land in the
same split whichever of the three formats holds them and however a number is written.
An array row (NPZ) hashes its bytes and label with BLAKE2b."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

from services.data.entities import SplitRatios

_SEED = np.uint64(0x9E3779B97F4A7C15)
_MULTIPLIERS = (np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))
_SHIFTS = (np.uint64(30), np.uint64(27), np.uint64(31))


def hash_rows(keys: Iterable[bytes]) -> np.ndarray:
    """A 64-bit BLAKE2b hash of each row's key (its content), as uint64."""
    digests = b"".join(hashlib.blake2b(key, digest_size=8).digest() for key in keys)
    return np.frombuffer(digests, dtype="<u8")


def text_words(values: Iterable[str]) -> np.ndarray:
    """Each text's word: its 64-bit BLAKE2b hash."""
    return hash_rows(value.encode() for value in values)


def number_words(numbers: np.ndarray) -> np.ndarray:
    """Each float64's word: its bits, with -0.0 as 0.0."""
    return (numbers + 0.0).view(np.uint64)


def hash_values(words: list[np.ndarray]) -> np.ndarray:
    """Each row's hash from its values' words, one uint64 array per column."""
    hashes = np.full(len(words[0]), _SEED, dtype=np.uint64)
    for column in words:
        hashes ^= column
        hashes ^= hashes >> _SHIFTS[0]
        hashes *= _MULTIPLIERS[0]
        hashes ^= hashes >> _SHIFTS[1]
        hashes *= _MULTIPLIERS[1]
        hashes ^= hashes >> _SHIFTS[2]
    return hashes


def assign_splits(row_hashes: np.ndarray, ratios: SplitRatios) -> np.ndarray:
    """Each row's split as an index into SPLITS: its hash as a fraction of 2**64 falls in
    [0, train) for train, [train, train + validation) for validation, the rest test."""
    fractions = (row_hashes >> np.uint64(11)).astype(np.float64) * 2.0**-53
    bounds = np.array([ratios.train, ratios.train + ratios.validation])
    return np.searchsorted(bounds, fractions, side="right").astype(np.int8)
