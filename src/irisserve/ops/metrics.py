"""Prometheus metrics: requests by route and status, latency, in-flight, inference time, predictions by
class, out-of-range inputs by feature, validation errors, model load, and each feature's drift (PSI, set from
``ops/drift.py``'s report at every scrape).

Every label value comes from a bounded set (route templates, known methods, the spec's classes and
features), so hostile paths or methods cannot grow the metrics. With several workers, prometheus_client's
multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set by ``irisserve serve``) lets /metrics add up every
worker's counts.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import anyio.to_thread
import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from starlette.requests import Request
from starlette.responses import Response

from irisserve.core.predictor import ClassPredictions, Predictions
from irisserve.core.spec import ModelSpec
from irisserve.ops.lifecycle import MULTIPROC_ENV

PREFIX = "irisserve"
REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
INFERENCE_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
# Gauges computed on demand (drift) are refreshed by a scrape at most this often; Prometheus scrapes every 15-60 s.
REFRESH_SECONDS = 1.0

# The *_created series double the scrape for no use here (Prometheus derives resets from the counters).
disable_created_metrics()

REQUESTS = Counter(f"{PREFIX}_http_requests", "HTTP requests answered, by method, route and status.", ["method", "route", "status"])
REQUEST_SECONDS = Histogram(
    f"{PREFIX}_http_request_duration_seconds", "Time from request to last response byte.", ["method", "route"], buckets=REQUEST_BUCKETS
)
IN_FLIGHT = Gauge(f"{PREFIX}_http_requests_in_flight", "Requests being handled now.", multiprocess_mode="livesum")
# The per-model series carry the model's name and version: bounded by what is loaded, removed when it is unloaded.
MODEL_LABELS = ["model", "version"]
INFERENCE_SECONDS = Histogram(
    f"{PREFIX}_inference_duration_seconds", "Time in the model for one request (all its rows).", MODEL_LABELS,
    buckets=INFERENCE_BUCKETS,
)
VALIDATION_ERRORS = Counter(f"{PREFIX}_validation_errors", "Requests refused because the body broke the schema.", ["route"])
PREDICTIONS = Counter(f"{PREFIX}_predictions", "Rows predicted, by model, version and predicted class.", [*MODEL_LABELS, "class"])
OUT_OF_RANGE = Counter(
    f"{PREFIX}_out_of_range_inputs", "Rows with a feature outside the training data's range (a drift signal).",
    [*MODEL_LABELS, "feature"],
)
MODEL_LOAD_SECONDS = Gauge(
    f"{PREFIX}_model_load_seconds", "Seconds to verify and open the model artifact.", MODEL_LABELS, multiprocess_mode="liveall"
)
FEATURE_DRIFT_PSI = Gauge(
    f"{PREFIX}_feature_drift_psi",
    "Population stability index of the feature's recent inputs against training (drift above IRISSERVE_DRIFT_PSI_THRESHOLD).",
    [*MODEL_LABELS, "feature"],
    multiprocess_mode="livemostrecent",  # each worker has its own window: the scraped worker's, refreshed at the scrape
)
DRIFT_WINDOW_ROWS = Gauge(f"{PREFIX}_drift_window_rows", "Rows in the drift window.", MODEL_LABELS, multiprocess_mode="livemostrecent")
PROCESS_START = Gauge(
    f"{PREFIX}_process_start_time_seconds", "When this server process started (Unix time).", multiprocess_mode="liveall"
)

_children: dict[tuple[Any, ...], Any] = {}  # (metric, *label values) -> child
_validation_children: dict[str, Any] = {}


def _child(metric: Any, *labels: str) -> Any:
    key = (metric, *labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


def _process_start_time() -> float:
    """The kernel's start time of this process (Linux), else now: imports happen a moment after start."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(line for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime"))
        return int(boot.split()[1]) + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


PROCESS_START.set(_process_start_time())


def record_predictions(spec: ModelSpec, matrix: np.ndarray, predictions: Predictions, flags: list[list[str]], seconds: float) -> None:
    """Time one model call and count its rows by predicted class (classifiers) and its out-of-range features.

    The pipeline's observer: called by every front door that keeps metrics, for /predict, batches and V2."""
    model, version = spec.name, spec.version
    _child(INFERENCE_SECONDS, model, version).observe(seconds)
    if isinstance(predictions, ClassPredictions):
        for class_id in set(predictions.class_ids):
            _child(PREDICTIONS, model, version, spec.targets[class_id]).inc(predictions.class_ids.count(class_id))
    for row in flags:
        for feature in row:
            _child(OUT_OF_RANGE, model, version, feature).inc()


# A body that breaks the model's schema: 422 in the seed API, 400 in the Open Inference Protocol.
VALIDATION_STATUS = {"seed": 422, "v2": 400}


class RequestMetrics:
    """The per-request series (count, latency, in flight, validation errors), their children cached by labels:
    ObservabilityMiddleware calls ``begin`` and ``end`` around every request."""

    def __init__(self) -> None:
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def begin(self) -> None:
        IN_FLIGHT.inc()

    def end(self, method: str, route: str, status: int, seconds: float, protocol: str) -> None:
        IN_FLIGHT.dec()
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (REQUESTS.labels(method, route, str(status)), REQUEST_SECONDS.labels(method, route))
        children[0].inc()
        children[1].observe(seconds)
        if status == VALIDATION_STATUS[protocol]:  # counted here, once, whichever layer refused the body
            record_validation_error(route)


def record_validation_error(route: str) -> None:
    child = _validation_children.get(route)
    if child is None:
        child = _validation_children[route] = VALIDATION_ERRORS.labels(route)
    child.inc()


def record_model_load(spec: ModelSpec, seconds: float) -> None:
    _child(MODEL_LOAD_SECONDS, spec.name, spec.version).set(seconds)


def forget_model(name: str, version: str) -> None:
    """Remove an unloaded version's series (in this process; with several workers, prometheus_client's files keep
    a dead series' last values until the server restarts)."""
    for key in [key for key in _children if key[1:3] == (name, version)]:
        metric, *labels = key
        del _children[key]
        with contextlib.suppress(KeyError):
            metric.remove(*labels)


def multiprocess_enabled() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def metrics_text() -> bytes:
    """Every metric in Prometheus' text format; with several workers, the sum of all of them."""
    if not multiprocess_enabled():
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry)


def mark_worker_exited() -> None:
    """Drop this worker's live gauges (in flight, load time, start time) from the shared folder."""
    if multiprocess_enabled():
        multiprocess.mark_process_dead(os.getpid())


def export_drift(spec: ModelSpec, report: Mapping[str, Any]) -> None:
    """Set the model's drift gauges from its drift report (``ops/drift.py``). Below the report's ``min_rows`` a PSI
    says little (a few rows cannot fill ten bins), so it is exported as NaN: ``> threshold`` alerts stay quiet."""
    enough = report["rows"] >= report["min_rows"]
    for feature, entry in report["features"].items():
        value = entry["psi"] if enough and entry["psi"] is not None else math.nan
        _child(FEATURE_DRIFT_PSI, spec.name, spec.version, feature).set(value)
    _child(DRIFT_WINDOW_ROWS, spec.name, spec.version).set(report["rows"])


async def read_metrics(request: Request) -> Response:
    """Prometheus scrape endpoint."""
    return Response(metrics_text(), media_type=CONTENT_TYPE_LATEST)


def metrics_endpoint(
    before_scrape: Callable[[], None],
    *,
    max_age_seconds: float,
    refresh_seconds: float = REFRESH_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> Callable[[Request], Awaitable[Response]]:
    """The scrape endpoint. The text is rendered at most once per ``max_age_seconds`` (IRISSERVE_METRICS_MAX_AGE_SECONDS)
    and served as rendered in between; ``before_scrape`` (refreshing gauges computed on demand, such as drift) runs
    at most once per ``refresh_seconds``; both on a worker thread.

    A 500-feature model's series take ~3 ms of Python to render and its 10,000-row drift window ~70 ms to bin: on
    the event loop four scrapers pushed /predict's p50 from 0.6 to 72 ms, and off it, holding the GIL, its p99 from
    1.6 to 21 ms. Rendered once a second (Prometheus scrapes every 15 to 60 s), a scrape is a dictionary read."""
    state: dict[str, Any] = {"refreshed": -math.inf, "rendered": -math.inf, "text": b""}
    lock = threading.Lock()

    def fresh(now: float) -> bool:
        return bool(now - state["rendered"] < max_age_seconds)

    def render() -> bytes:
        with lock:  # concurrent scrapers wait for one rendering instead of each doing it
            now = clock()
            if fresh(now):
                return bytes(state["text"])
            if now - state["refreshed"] >= refresh_seconds:
                before_scrape()
                state["refreshed"] = now
            state["text"], state["rendered"] = metrics_text(), now
            return bytes(state["text"])

    async def read_fresh_metrics(request: Request) -> Response:
        text = state["text"] if fresh(clock()) else await anyio.to_thread.run_sync(render)
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    return read_fresh_metrics


