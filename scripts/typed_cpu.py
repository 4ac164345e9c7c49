"""CPU per in-process /predict (the request pipeline: bytes in, bytes out) of two artifacts: issue 15's churn check.

    .venv/bin/python scripts/typed_cpu.py models/iris/1.0.0 path/to/churn/artifact"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from irisserve.core.pipeline import Limits, RequestPipeline
from irisserve.core.predictor import Predictor

CALLS = 5000


def cpu_per_predict(model_dir: Path) -> float:
    predictor = Predictor(model_dir)
    predictor.load()
    pipeline = RequestPipeline(predictor, Limits(max_body_bytes=1 << 20, max_batch_size=1000))
    body = json.dumps(predictor.spec.example).encode()
    for _ in range(200):
        pipeline.predict_one(body)
    started = time.process_time()
    for _ in range(CALLS):
        pipeline.predict_one(body)
    return (time.process_time() - started) / CALLS


if __name__ == "__main__":
    base, other = (cpu_per_predict(Path(folder)) for folder in sys.argv[1:3])
    print(f"{sys.argv[1]}: {base * 1e6:.1f} us CPU per /predict; {sys.argv[2]}: {other * 1e6:.1f} us ({other / base:.2f}x)")
