"""Pausing Python's cyclic garbage collector around work that makes many small containers and
no reference cycles worth collecting meanwhile (a batch of records resolved, a network
analysed). Reference counting still frees everything as usual; the collector's passes over the
young objects are what is saved (a fifth to a third of such work's time)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """The collector off for the block, then back as it was (nested pauses leave it off until
    the outermost ends)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
