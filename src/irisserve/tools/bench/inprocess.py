"""Single-row inference inside this process: the raw backend call, and the pipeline's predict-and-encode of one
validated row (reported as ``predict_rows``: predictor, out-of-range flags, response objects)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from irisserve.core.errors import IrisServeError
from irisserve.core.pipeline import Limits, RequestPipeline
from irisserve.core.predictor import BACKENDS, Predictor
from irisserve.tools.bench.stats import median, summarize_ms

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
    raw_input = np.asarray([row], dtype=np.float32)
    backend_call = predictor.backend.run
    pipeline = RequestPipeline(predictor, Limits(max_body_bytes=1 << 20, max_batch_size=1))
    if backend == "sklearn":
        calls = min(calls, SKLEARN_MAX_CALLS)
    paths = {"backend_call": lambda: backend_call(raw_input), "predict_rows": lambda: pipeline.answers([row])}
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
