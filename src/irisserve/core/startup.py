"""Wall-clock marks of each start-up phase, reported by /health so the benchmark can split cold start."""

from __future__ import annotations

import time

STARTUP_MARKS: dict[str, float] = {}


def mark(phase: str) -> None:
    """Record when ``phase`` ended (the first time only: a phase ends once per process)."""
    STARTUP_MARKS.setdefault(phase, time.time())
