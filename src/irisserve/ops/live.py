"""The live panel's figures, kept in this process: the last minute's requests (by route, errors, p50/p99 latency),
the rows predicted by class, out-of-range inputs by feature, and the drift report.

Recording is an append to a bounded deque (the middleware, or the function's handler) and a few integer
additions per model call (the pipeline's observer); everything else happens when the panel asks, a few times
a minute. No prometheus_client or web framework here: the Cloud Function keeps the same figures per instance.
With several web workers each keeps its own (the request's worker answers).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from irisserve.core.predictor import ClassPredictions, Predictions
from irisserve.core.spec import ModelSpec
from irisserve.ops.drift import DriftMonitor

WINDOW_SECONDS = 60.0
# At most this many requests are kept: past ~170 requests a second the window covers less than a minute
# (``covered_seconds`` says how much); memory stays near 1.5 MB whatever the load (50,000 cost 10 MB of the
# web service's resident memory).
MAX_REQUESTS_KEPT = 10_000
ERROR_STATUS = 400
MS_DECIMALS = 3


def percentile(sorted_values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile of already sorted values; None when there are none."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e3, MS_DECIMALS)


def _latency(durations: list[float]) -> dict[str, Any]:
    durations.sort()
    return {"p50_ms": _ms(percentile(durations, 0.50)), "p99_ms": _ms(percentile(durations, 0.99))}


class LiveStats:
    """The figures behind ``GET /model/stats`` (``StatsResponse`` in core/schemas.py) for one served model."""

    def __init__(
        self,
        spec: ModelSpec,
        drift: DriftMonitor,
        *,
        window_seconds: float = WINDOW_SECONDS,
        max_requests: int = MAX_REQUESTS_KEPT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spec = spec
        self.drift = drift
        self.window_seconds = window_seconds
        self._clock = clock
        self._started = clock()
        self._requests: deque[tuple[float, str, str, int, float]] = deque(maxlen=max_requests)
        self._lock = threading.Lock()
        self._rows = 0
        self._by_class = [0] * len(spec.targets) if spec.is_classifier else []
        self._values_sum = 0.0
        self._values_min = math.inf
        self._values_max = -math.inf
        self._flagged_rows = 0
        self._out_of_range = dict.fromkeys(spec.feature_names, 0)

    def record_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """One answered request (``route`` a template, from a bounded set). deque.append is atomic: no lock."""
        self._requests.append((self._clock(), method, route, status, seconds))

    def observe(self, spec: ModelSpec, matrix: np.ndarray, predictions: Predictions, flags: list[list[str]], seconds: float) -> None:
        """The pipeline's observer: the rows go to the drift window, their answers and flags to the counts."""
        self.drift.observe(matrix)
        with self._lock:
            self._rows += len(matrix)
            if isinstance(predictions, ClassPredictions):
                by_class = self._by_class
                for class_id in predictions.class_ids:
                    by_class[class_id] += 1
            elif predictions.values:
                values = predictions.values
                self._values_sum += sum(values)
                self._values_min = min(self._values_min, *values)
                self._values_max = max(self._values_max, *values)
            for flagged in flags:
                if flagged:
                    self._flagged_rows += 1
                    for feature in flagged:
                        self._out_of_range[feature] += 1

    def body(self) -> dict[str, Any]:
        """Everything the live panel shows, as JSON-ready values."""
        now = self._clock()
        return {
            "model_name": self.spec.name,
            "model_version": self.spec.version,
            "uptime_seconds": round(now - self._started, 3),
            "requests": self._requests_body(now),
            "predictions": self._predictions_body(),
            "out_of_range": self._out_of_range_body(),
            "drift": self.drift.report(),
        }

    def _snapshot(self) -> list[tuple[float, str, str, int, float]]:
        """The kept requests. Appends take no lock (the hot path); a copy that met one (the function's threads)
        raises RuntimeError, and is simply taken again."""
        for _ in range(10):
            try:
                return list(self._requests)
            except RuntimeError:
                continue
        return []

    def _requests_body(self, now: float) -> dict[str, Any]:
        since = now - self.window_seconds
        recent = [entry for entry in self._snapshot() if entry[0] >= since]
        routes: dict[str, dict[str, Any]] = {}
        durations: dict[str, list[float]] = {}
        for _, method, route, status, seconds in recent:
            key = f"{method} {route}"
            summary = routes.get(key)
            if summary is None:
                summary = routes[key] = {"requests": 0, "errors": 0, "statuses": {}}
                durations[key] = []
            summary["requests"] += 1
            summary["errors"] += status >= ERROR_STATUS
            summary["statuses"][str(status)] = summary["statuses"].get(str(status), 0) + 1
            durations[key].append(seconds)
        for key, summary in routes.items():
            summary.update(_latency(durations[key]))
        kept = self._requests
        covered = self.window_seconds
        if len(kept) == kept.maxlen:  # the cap, not the clock, dropped the oldest requests
            covered = min(covered, now - kept[0][0])
        return {
            "window_seconds": self.window_seconds,
            "covered_seconds": round(covered, 3),
            "total": len(recent),
            "errors": sum(summary["errors"] for summary in routes.values()),
            **_latency([entry[4] for entry in recent]),
            "routes": dict(sorted(routes.items())),
        }

    def _out_of_range_body(self) -> dict[str, Any]:
        with self._lock:
            return {"rows": self._flagged_rows, "by_feature": dict(self._out_of_range)}

    def _predictions_body(self) -> dict[str, Any]:
        with self._lock:
            rows, by_class = self._rows, list(self._by_class)
            total, low, high = self._values_sum, self._values_min, self._values_max
        if self.spec.is_classifier:
            return {"rows": rows, "by_class": dict(zip(self.spec.targets, by_class, strict=True)), "values": None}
        values = {"mean": total / rows, "min": low, "max": high} if rows else None
        return {"rows": rows, "by_class": None, "values": values}
