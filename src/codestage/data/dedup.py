"""Exact deduplication state: the 128-bit content hashes seen so far, in sorted numpy runs.

16 bytes per unique document (a Python set would take ~6x that) and vectorised membership tests;
runs are merged like a binary counter so there are O(log n) of them. This is the one part of a
build whose memory grows with the corpus; it is only kept when deduplication is asked for.
"""

from __future__ import annotations

import numpy as np

from codestage.data.encode import HASH_DTYPE


class SeenHashes:
    """`first_seen(batch)` marks the documents whose hash has not appeared before, in order."""

    def __init__(self) -> None:
        self.runs: list[np.ndarray] = []

    def __len__(self) -> int:
        return sum(len(r) for r in self.runs)

    def first_seen(self, hashes: np.ndarray) -> np.ndarray:
        hashes = np.asarray(hashes, dtype=HASH_DTYPE)
        keep = np.zeros(len(hashes), dtype=bool)
        if not len(hashes):
            return keep
        uniq, first = np.unique(hashes, return_index=True)
        fresh = np.ones(len(uniq), dtype=bool)
        for run in self.runs:
            pos = np.searchsorted(run, uniq)
            hit = pos < len(run)
            hit[hit] = run[pos[hit]] == uniq[hit]
            fresh &= ~hit
        keep[first[fresh]] = True
        self._add(uniq[fresh])
        return keep

    def _add(self, sorted_new: np.ndarray) -> None:
        if not len(sorted_new):
            return
        self.runs.append(sorted_new)
        while len(self.runs) > 1 and len(self.runs[-2]) <= 2 * len(self.runs[-1]):
            b, a = self.runs.pop(), self.runs.pop()
            self.runs.append(np.sort(np.concatenate([a, b]), kind="stable"))
