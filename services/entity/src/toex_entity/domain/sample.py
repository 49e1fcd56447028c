"""A bounded uniform sample of the person records, kept as they are written (bottom-k).

The model is re-estimated from a sample of the stored person records. Reading a random sample
of a table of a million records makes the database read most of that table; so the sample is
kept as records are written instead: each person record draws a random key in [0, 1) when it
is stored, and the sample is the `cap` records with the smallest keys (a bottom-k sample: every
subset of `cap` records is equally likely, whatever order they came in).

The store keeps every record whose key is under the current threshold (1.0 until the sample
first holds `cap` records, so at first every record). When the kept rows exceed `cap` by the
margin, the largest keys are removed down to `cap` and the threshold becomes the largest key
kept: a record stored after that enters only with a smaller key. Between trims the store holds
at most `cap` plus the margin, and its `cap` smallest keys are exactly the bottom-k sample of
all records stored, which is what the estimate reads.

`BottomK` is the rule in memory (the fakes and the tests use it); adapters/repository.py keeps
the same rule in PostgreSQL, in the transaction that writes the record.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

# The default cap (TOEX_LEARNING_SAMPLE_CAP): how many records the estimate reads at most.
DEFAULT_CAP = 200_000
# Rows kept over the cap before a trim, as a share of the cap: trims are rare (one per
# cap x margin records entering), and each removes only the margin.
TRIM_MARGIN = 0.1


def draw_keys(count: int, rng: random.Random | None = None) -> list[float]:
    """A key in [0, 1) for each of `count` records."""
    draw = (rng or _RNG).random
    return [draw() for _ in range(count)]


def over_bound(size: int, cap: int) -> bool:
    """Whether a sample of `size` rows should be trimmed down to `cap`."""
    return size > cap + max(1, int(cap * TRIM_MARGIN))


# Not for secrets: the keys only need to be uniform and independent of the records.
_RNG = random.Random()


class BottomK:
    """The sample in memory: record id -> key, with the threshold a new record must be under."""

    def __init__(self, cap: int = DEFAULT_CAP) -> None:
        if cap < 1:
            raise ValueError("the sample cap must be at least 1")
        self.cap = cap
        self.threshold = 1.0
        self.keys: dict[str, float] = {}

    def offer(self, record_id: str, key: float) -> bool:
        """A record just stored, with its key: kept if under the threshold. True if kept."""
        if key >= self.threshold:
            return False
        self.keys[record_id] = key
        if over_bound(len(self.keys), self.cap):
            self.trim()
        return True

    def offer_all(self, record_ids: Iterable[str], rng: random.Random | None = None) -> list[str]:
        ids = list(record_ids)
        return [i for i, k in zip(ids, draw_keys(len(ids), rng), strict=True) if self.offer(i, k)]

    def remove(self, record_id: str) -> None:
        """A record deleted from the store leaves the sample too."""
        self.keys.pop(record_id, None)

    def trim(self) -> None:
        """Down to the `cap` smallest keys; the threshold becomes the largest key kept."""
        if len(self.keys) <= self.cap:
            return
        kept = sorted(self.keys.items(), key=lambda item: item[1])[: self.cap]
        self.keys = dict(kept)
        self.threshold = kept[-1][1]

    def sample(self, limit: int | None = None) -> list[str]:
        """The record ids of the sample, smallest key first (what the estimate reads)."""
        ordered = sorted(self.keys, key=self.keys.__getitem__)
        return ordered[: self.cap if limit is None else min(limit, self.cap)]
