"""The live panel's figures, kept in this process: the last minute's requests (by route, errors, p50/p99 latency),
the rows predicted by class, out-of-range inputs by feature, and the drift report.

Requests are counted per second (a ring of one slot per second of the window): the counts cover a real minute
at any rate, and memory is bounded by the routes and a sample of at most ``MAX_DURATIONS_PER_SECOND`` durations
per route and second, from which the percentiles are read (exact below that rate). Recording is a few integer
additions (the middleware, or the function's handler), and a few more per model call (the pipeline's observer);
everything else happens when the panel asks, a few times a minute. No prometheus_client or web framework here: the Cloud Function keeps the same figures per instance.
With several web workers each keeps its own (the request's worker answers).
"""

from __future__ import annotations

import math
import random
import threading
import time
from array import array
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from irisserve.core.pipeline import Limits, PredictionObserver, RequestPipeline
from irisserve.core.predictor import ClassPredictions, Predictions, Predictor
from irisserve.core.registry import Build, ModelRegistry, ServedModel
from irisserve.core.settings import Settings
from irisserve.core.spec import ModelSpec
from irisserve.ops.drift import DriftMonitor

WINDOW_SECONDS = 60.0
# Per route and second, at most this many durations are kept (a uniform sample past it) for p50/p99; the counts
# are exact at any rate. At most 61 seconds x routes x 200 x 8 bytes: ~100 KB per route, whatever the load.
MAX_DURATIONS_PER_SECOND = 200
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


class _RouteSecond:
    """One route's requests in one second: exact counts, and a bounded sample of their durations."""

    __slots__ = ("durations", "errors", "requests", "statuses")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.statuses: dict[int, int] = {}
        self.durations = array("d")

    def add(self, status: int, seconds: float, cap: int) -> None:
        self.requests += 1
        self.errors += status >= ERROR_STATUS
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if len(self.durations) < cap:
            self.durations.append(seconds)
        else:  # reservoir sampling: every request of the second equally likely to be kept
            slot = random.randrange(self.requests)
            if slot < cap:
                self.durations[slot] = seconds


class LiveStats:
    """The figures behind ``GET /model/stats`` (``StatsResponse`` in core/schemas.py) for one served model."""

    def __init__(
        self,
        spec: ModelSpec,
        drift: DriftMonitor,
        *,
        window_seconds: float = WINDOW_SECONDS,
        max_durations_per_second: int = MAX_DURATIONS_PER_SECOND,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spec = spec
        self.drift = drift
        self.window_seconds = window_seconds
        self.max_durations_per_second = max_durations_per_second
        self._clock = clock
        self._started = clock()
        # slot i holds second s when s % len == i: (s, {"METHOD /route": counts}); a stale slot is reset on reuse
        self._seconds: list[tuple[int, dict[str, _RouteSecond]]] = [(-1, {})] * (math.ceil(window_seconds) + 1)
        self._requests_lock = threading.Lock()
        self._lock = threading.Lock()
        self._rows = 0
        self._by_class = [0] * len(spec.targets) if spec.is_classifier else []
        self._values_sum = 0.0
        self._values_min = math.inf
        self._values_max = -math.inf
        self._flagged_rows = 0
        self._out_of_range = dict.fromkeys(spec.feature_names, 0)

    def record_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """One answered request (``route`` a template, from a bounded set), counted in its second."""
        second = math.floor(self._clock())
        key = f"{method} {route}"
        slots = self._seconds
        with self._requests_lock:  # the function answers on several threads
            index = second % len(slots)
            held, routes = slots[index]
            if held != second:
                routes = {}
                slots[index] = (second, routes)
            counts = routes.get(key)
            if counts is None:
                counts = routes[key] = _RouteSecond()
            counts.add(status, seconds, self.max_durations_per_second)

    def observe(self, spec: ModelSpec, matrix: np.ndarray, predictions: Predictions, flags: list[list[str]], seconds: float) -> None:
        """The pipeline's observer: the rows go to the drift window, their answers and flags to the counts."""
        self.drift.observe(matrix)
        with self._lock:
            self._rows += len(matrix)
            if isinstance(predictions, ClassPredictions):
                by_class = self._by_class
                for class_id in predictions.class_ids:
                    by_class[class_id] += 1
            elif values := [value for value in predictions.values if math.isfinite(value)]:
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

    def _requests_body(self, now: float) -> dict[str, Any]:
        since = now - self.window_seconds
        with self._requests_lock:
            recent = [(key, counts) for second, routes in self._seconds if second >= since for key, counts in routes.items()]
            summaries = [(key, counts.requests, counts.errors, dict(counts.statuses), list(counts.durations)) for key, counts in recent]
        routes: dict[str, dict[str, Any]] = {}
        durations: dict[str, list[float]] = {}
        for key, requests, errors, statuses, sample in summaries:
            summary = routes.get(key)
            if summary is None:
                summary = routes[key] = {"requests": 0, "errors": 0, "statuses": {}}
                durations[key] = []
            summary["requests"] += requests
            summary["errors"] += errors
            for status, count in statuses.items():
                summary["statuses"][str(status)] = summary["statuses"].get(str(status), 0) + count
            durations[key].extend(sample)
        for key, summary in routes.items():
            summary["statuses"] = dict(sorted(summary["statuses"].items()))
            summary.update(_latency(durations[key]))
        return {
            "window_seconds": self.window_seconds,
            "covered_seconds": round(min(self.window_seconds, now - self._started), 3),
            "total": sum(summary["requests"] for summary in routes.values()),
            "errors": sum(summary["errors"] for summary in routes.values()),
            **_latency([value for sample in durations.values() for value in sample]),
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


def live_build(settings: Settings, also: PredictionObserver | None = None) -> Build:
    """How both doors serve a loaded model: its request pipeline under the settings' limits, observed by its own
    live figures and drift window (``extras["live"]``) and by ``also`` (the web service's Prometheus counters)."""

    def build(predictor: Predictor) -> tuple[RequestPipeline, dict[str, Any]]:
        live = LiveStats(predictor.spec, DriftMonitor(predictor.spec, threshold=settings.drift_psi_threshold))

        def observe(spec: ModelSpec, matrix: np.ndarray, predictions: Predictions, flags: list[list[str]], seconds: float) -> None:
            if also is not None:
                also(spec, matrix, predictions, flags, seconds)
            live.observe(spec, matrix, predictions, flags, seconds)

        pipeline = RequestPipeline(
            predictor, Limits(settings.max_body_bytes, settings.max_batch_size), observe=observe if also is not None else live.observe
        )
        return pipeline, {"live": live}

    return build


def live_of(record: ServedModel | None) -> LiveStats | None:
    return None if record is None else record.extras.get("live")


def live_figures(registry_of: Callable[[], ModelRegistry | None]) -> Callable[[Mapping[str, Any]], LiveStats | None]:
    """The request log's live figures for a request: those of the model it was for (``scope["state"]["served"]``,
    set by the handler that resolved it), else the default model's."""

    def figures(scope: Mapping[str, Any]) -> LiveStats | None:
        record = scope.get("state", {}).get("served")
        if record is None:
            registry = registry_of()
            record = None if registry is None else registry.snapshot.serving.get(registry.default_name)
        return live_of(record)

    return figures
