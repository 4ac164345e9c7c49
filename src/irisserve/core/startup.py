"""Wall-clock marks of each start-up phase, reported by /health so the benchmark can split cold start; and the heap
start-up leaves, kept out of the cycle collector's way while the process serves."""

from __future__ import annotations

import gc
import threading
import time

STARTUP_MARKS: dict[str, float] = {}
RECLAIM_AFTER_SECONDS = 2.0


def mark(phase: str) -> None:
    """Record when ``phase`` ended (the first time only: a phase ends once per process)."""
    STARTUP_MARKS.setdefault(phase, time.time())


def mark_ready() -> None:
    """The process is about to serve: mark it, and move everything start-up built (the libraries, the app, its
    schemas, the loaded models: some 70,000 objects) out of the cycle collector's reach. Otherwise every full
    collection walks them all: 30-60 ms with the event loop stopped, every dozen 1,000-row batches. No collection
    first: it would cost a cold start as much, to free some 200 objects that stay held instead. In a gunicorn
    arbiter (the function's import mode) this is also what keeps the workers' copies of those pages shared."""
    if "ready" not in STARTUP_MARKS:
        gc.freeze()
    mark("ready")


def reclaim_heap() -> None:
    """After a model was unloaded or replaced: give the heap back to the cycle collector now (frozen at start-up, what
    the model leaves in reference cycles would never be freed), and a little later, once the requests and frames still
    holding the old model are done, collect once and freeze what is left again."""
    gc.unfreeze()
    timer = threading.Timer(RECLAIM_AFTER_SECONDS, _collect_and_freeze)
    timer.daemon = True
    timer.start()


def _collect_and_freeze() -> None:
    gc.collect()
    gc.freeze()
