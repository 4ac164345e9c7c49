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


def pause_collection() -> None:
    """For start-up: imports and the model build some 70,000 objects that live as long as the process, and no garbage
    worth collecting; the cycle collector's passes over them cost a web cold start about 70 ms (15 %). Off until
    ``resume_collection``."""
    gc.disable()


def resume_collection() -> None:
    """Start-up is over: move everything it built (the libraries, the app, its schemas, the loaded models) out of the
    cycle collector's reach, then collect again. Otherwise every full collection walks them all: 30-60 ms with the
    event loop stopped, every dozen 1,000-row batches. No collection first: it would cost a cold start as much, to
    free some 200 objects that stay held instead. In a gunicorn arbiter this also keeps the pages the workers inherit
    shared."""
    gc.freeze()
    gc.enable()


def mark_ready() -> None:
    """The process is about to serve: mark it, and end start-up's hold on the collector (once per process)."""
    if "ready" not in STARTUP_MARKS:
        resume_collection()
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
