"""CPU per in-process /predict of two artifacts (issue 15's churn check): the request pipeline alone (bytes in,
bytes out), and the whole web app (every middleware, as scripts/prefix_cost.py measures it).

    .venv/bin/python scripts/typed_cpu.py models/iris/1.0.0 path/to/churn/artifact"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

from prefix_cost import cpu_per_request

from irisserve.core.pipeline import Limits, RequestPipeline
from irisserve.core.predictor import Predictor
from irisserve.core.settings import Settings
from irisserve.web.app import create_app

CALLS = 5000
REPEATS = 5


def cpu_per_predict(model_dir: Path) -> tuple[float, float]:
    """Median µs of CPU per /predict: the pipeline alone, and through the whole app."""
    predictor = Predictor(model_dir)
    predictor.load()
    pipeline = RequestPipeline(predictor, Limits(max_body_bytes=1 << 20, max_batch_size=1000))
    body = json.dumps(predictor.spec.example).encode()
    app = create_app(Settings(model_dir=model_dir, log_format="text", log_level="warning"), predictor)
    alone, whole = [], []
    for _ in range(REPEATS):
        for _ in range(200):
            pipeline.predict_one(body)
        started = time.process_time()
        for _ in range(CALLS):
            pipeline.predict_one(body)
        alone.append((time.process_time() - started) / CALLS * 1e6)
        whole.append(asyncio.run(cpu_per_request(app, "/predict", "", body)))
    return statistics.median(alone), statistics.median(whole)


if __name__ == "__main__":
    (base_alone, base_whole), (other_alone, other_whole) = (cpu_per_predict(Path(folder)) for folder in sys.argv[1:3])
    print(f"pipeline alone: {sys.argv[1]} {base_alone:.1f} µs, {sys.argv[2]} {other_alone:.1f} µs ({other_alone / base_alone:.2f}×)")
    print(f"whole request:  {sys.argv[1]} {base_whole:.1f} µs, {sys.argv[2]} {other_whole:.1f} µs ({other_whole / base_whole:.2f}×)")
