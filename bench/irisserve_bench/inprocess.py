"""Single-row inference inside this process: the raw backend call, and the pipeline's predict-and-encode of one
validated row (reported as ``predict_rows``: predictor, out-of-range flags, response objects).

What the model page's live figures and drift window add to each request, measured the same way: the pipeline
with the web service's observers before them (``predict_rows_metrics``: Prometheus counts) and with them
(``predict_rows_metrics_live``: + drift window and live counts), the live observer alone (``live_observe``) and
the middleware's per-request record (``record_request``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from irisserve.core.errors import IrisServeError
from irisserve.core.pipeline import Limits, RequestPipeline
from irisserve.core.predictor import BACKENDS, Predictor
from irisserve.core.spec import ModelSpec
from irisserve.ops.drift import DriftMonitor
from irisserve.ops.live import LiveStats
from irisserve.ops.metrics import record_predictions
from irisserve_bench.stats import median, summarize_ms

WARM_UP_CALLS = 50
# scikit-learn's forest answers in milliseconds, not microseconds: fewer calls say as much.
SKLEARN_MAX_CALLS = 100


def _time_calls(call: Callable[[], Any], calls: int) -> list[float]:
    for _ in range(WARM_UP_CALLS):
        call()
    timings = []
    clock = time.perf_counter_ns
    for _ in range(calls):
        started = clock()
        call()
        timings.append((clock() - started) / 1e9)
    return timings


def _load(model_dir: Path, backend: str) -> Predictor:
    predictor = Predictor(model_dir, backend=backend)  # type: ignore[arg-type]
    predictor.load()
    return predictor


def measure_backend(model_dir: Path, backend: str, *, calls: int, repeats: int) -> dict[str, Any]:
    """p50/p99 of one-row inference, each repeat separately, and the median p50 across repeats."""
    try:
        predictor = _load(model_dir, backend)
    except IrisServeError as exc:
        return {"backend": backend, "error": str(exc)}
    row = list(predictor.spec.example.values())
    raw_input, texts = predictor.spec.encode([row])
    backend_call = predictor.backend.run
    limits = Limits(max_body_bytes=1 << 20, max_batch_size=1)
    pipeline = RequestPipeline(predictor, limits)
    live = LiveStats(predictor.spec, DriftMonitor(predictor.spec))

    def observe_metrics_and_live(spec: ModelSpec, matrix: np.ndarray, predictions: Any, flags: list[list[str]], seconds: float) -> None:
        record_predictions(spec, matrix, predictions, flags, seconds)  # what the web service's observer does
        live.observe(spec, matrix, predictions, flags, seconds)

    with_metrics = RequestPipeline(predictor, limits, observe=record_predictions)
    with_live = RequestPipeline(predictor, limits, observe=observe_metrics_and_live)
    predictions, flags = pipeline.predict_rows([row])
    if backend == "sklearn":
        calls = min(calls, SKLEARN_MAX_CALLS)
    paths = {
        "backend_call": lambda: backend_call(raw_input, texts),
        "predict_rows": lambda: pipeline.answers([row]),
        "predict_rows_metrics": lambda: with_metrics.answers([row]),
        "predict_rows_metrics_live": lambda: with_live.answers([row]),
        "live_observe": lambda: live.observe(predictor.spec, raw_input, predictions, flags, 1e-5),
        "record_request": lambda: live.record_request("POST", "/predict", 200, 5e-4),
    }
    result: dict[str, Any] = {"backend": backend, "calls_per_repeat": calls}
    for name, call in paths.items():
        runs = [summarize_ms(_time_calls(call, calls)) for _ in range(repeats)]
        result[name] = {
            "runs": runs,
            "p50_us": median(run["p50_ms"] for run in runs) * 1e3,
            "p99_us": median(run["p99_ms"] for run in runs) * 1e3,
        }
    return result


def measure_all(model_dir: Path, *, calls: int, repeats: int, backends: tuple[str, ...] = BACKENDS) -> list[dict[str, Any]]:
    return [measure_backend(model_dir, backend, calls=calls, repeats=repeats) for backend in backends]
