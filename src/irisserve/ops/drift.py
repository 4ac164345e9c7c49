"""Input drift per feature: the recent inputs' bin shares against the training shares, as a PSI.

Packaging records each feature's decile edges and the share of training rows in each bin (``docs/artifact.md``);
this module keeps the last ``DEFAULT_WINDOW_ROWS`` predicted rows (and none older than
``DEFAULT_MAX_AGE_SECONDS``), bins them with the same rule, ``searchsorted(edges, x, side="right")``, and
computes each feature's population stability index against training:

    PSI = sum over bins of (window_share - training_share) * ln(window_share / training_share)

Cheap on the hot path: ``observe`` copies the request's float32 matrix into a ring buffer under a lock (about a
microsecond for one row); binning and the PSI run only when a report is asked for (the live panel, /model/drift,
a /metrics scrape), over at most the whole window, and the answer is cached until a row arrives or a second passes.

No prometheus_client or web framework here: the Cloud Function keeps the same statistics.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from irisserve.core.spec import ModelSpec

DEFAULT_WINDOW_ROWS = 10_000
# A window that a quiet hour has not refreshed describes yesterday's traffic, not today's.
DEFAULT_MAX_AGE_SECONDS = 3600.0
DEFAULT_PSI_THRESHOLD = 0.2
# A handful of rows cannot fill ten bins: their PSI is large by chance. Below this many rows nothing is flagged.
DEFAULT_MIN_ROWS = 100
# An empty bin (on either side) would make ln(0) or a division by zero; both shares are floored at this.
PSI_EPSILON = 1e-4
SHARE_DECIMALS = 4
PSI_DECIMALS = 6


def psi(training: np.ndarray, window: np.ndarray, *, epsilon: float = PSI_EPSILON) -> float:
    """The population stability index of ``window`` shares against ``training`` shares (same bins).

    Both are floored at ``epsilon`` so an empty bin counts as a small share instead of an infinite term."""
    expected = np.maximum(np.asarray(training, dtype=np.float64), epsilon)
    actual = np.maximum(np.asarray(window, dtype=np.float64), epsilon)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


class DriftMonitor:
    """A thread-safe sliding window of the rows a model predicted, and each feature's PSI over it."""

    def __init__(
        self,
        spec: ModelSpec,
        *,
        window_rows: int = DEFAULT_WINDOW_ROWS,
        max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS,
        threshold: float = DEFAULT_PSI_THRESHOLD,
        min_rows: int = DEFAULT_MIN_ROWS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window_rows < 1:
            raise ValueError(f"window_rows must be at least 1, not {window_rows}.")
        if max_age_seconds <= 0 or threshold <= 0:
            raise ValueError(f"max_age_seconds and threshold must be positive, not {max_age_seconds} and {threshold}.")
        self.spec = spec
        self.window_rows = window_rows
        self.max_age_seconds = max_age_seconds
        self.threshold = threshold
        self.min_rows = min_rows
        self._clock = clock
        width = len(spec.features)
        self._rows = np.zeros((window_rows, width), dtype=np.float32)
        self._times = np.full(window_rows, -math.inf)  # an unwritten slot is older than any age bound
        self._next = 0
        self._written = 0
        self._lock = threading.Lock()
        self._cached: tuple[tuple[int, int], dict[str, Any]] | None = None
        # The rows arrive as float32 (what the model sees), so the edges are compared as float32 too: a value
        # equal to an edge in the training data (Iris: 1.4) stays in the bin at or above that edge.
        self._binned = [
            (index, np.asarray(feature.bin_edges, dtype=np.float32), np.asarray(feature.bin_shares, dtype=np.float64))
            for index, feature in enumerate(spec.features)
            if feature.bin_edges and len(feature.bin_shares) == len(feature.bin_edges) + 1
        ]

    def observe(self, matrix: np.ndarray) -> None:
        """Add a request's rows (float32, [N, features], the spec's order) to the window."""
        count = len(matrix)
        if count == 0:
            return
        now = self._clock()
        capacity = self.window_rows
        with self._lock:
            if count >= capacity:
                self._rows[:] = matrix[-capacity:]
                self._times[:] = now
                self._next = 0
            else:
                start, end = self._next, self._next + count
                if end <= capacity:
                    self._rows[start:end] = matrix
                    self._times[start:end] = now
                else:  # wraps around the end of the ring
                    split = capacity - start
                    self._rows[start:] = matrix[:split]
                    self._rows[: end - capacity] = matrix[split:]
                    self._times[start:] = now
                    self._times[: end - capacity] = now
                self._next = end % capacity
            self._written += count

    def report(self) -> dict[str, Any]:
        """The drift report (``DriftReport`` in core/schemas.py): the window's row count and each feature's PSI."""
        now = self._clock()
        key = (self._written, int(now))
        cached = self._cached
        if cached is not None and cached[0] == key:
            return cached[1]
        with self._lock:
            fresh = self._times >= now - self.max_age_seconds
            rows = self._rows[fresh]  # a copy: binning runs outside the lock
        body = self._build(rows)
        self._cached = (key, body)
        return body

    def _build(self, rows: np.ndarray) -> dict[str, Any]:
        count = len(rows)
        features: dict[str, dict[str, Any]] = {
            feature.name: {"psi": None, "drifted": False, "training_shares": [], "window_shares": []} for feature in self.spec.features
        }
        for index, edges, training in self._binned:
            entry = features[self.spec.features[index].name]
            entry["training_shares"] = [round(float(share), SHARE_DECIMALS) for share in training]
            if count == 0:
                continue
            counts = np.bincount(np.searchsorted(edges, rows[:, index], side="right"), minlength=len(training))
            window = counts / count
            value = round(psi(training, window), PSI_DECIMALS)
            entry["psi"] = value
            entry["drifted"] = count >= self.min_rows and value > self.threshold
            entry["window_shares"] = [round(float(share), SHARE_DECIMALS) for share in window]
        return {
            "model_version": self.spec.version,
            "rows": count,
            "threshold": self.threshold,
            "min_rows": self.min_rows,
            "window_max_rows": self.window_rows,
            "window_max_age_seconds": self.max_age_seconds,
            "drifted_features": [name for name, entry in features.items() if entry["drifted"]],
            "features": features,
        }
