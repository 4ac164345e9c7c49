"""What /metrics costs on a wide model: a 500-feature model (packaged here with `irisserve package` the first time),
a full 10,000-row drift window, real uvicorn. Prints one scrape's latency, and /predict's p50/p99 alone, beside
4 scrapers (separate processes, scraping as fast as they can), and beside 4 as busy clients of /health.

    .venv/bin/python scripts/metrics_scrape_cost.py [--max-age SECONDS]    (IRISSERVE_METRICS_MAX_AGE_SECONDS)
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent
FEATURES = 500
MODEL = Path(tempfile.gettempdir()) / "irisserve-wide500"
SCRAPER = """
import httpx, sys, time
ends = time.monotonic() + float(sys.argv[2])
with httpx.Client(timeout=30) as client:
    while time.monotonic() < ends:
        client.get(sys.argv[1])
"""


def package_wide_model() -> Path:
    artifact = MODEL / "artifact"
    if (artifact / "manifest.json").is_file():
        return artifact
    import joblib
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    MODEL.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    data = pd.DataFrame(rng.random((2000, FEATURES)), columns=[f"x{i}" for i in range(FEATURES)])
    target = (data["x0"] + data["x1"] > 1).astype(int)
    joblib.dump(LogisticRegression(max_iter=500).fit(data, target), MODEL / "model.joblib")
    data.assign(target=target).to_csv(MODEL / "data.csv", index=False)
    subprocess.run(
        [str(BIN / "irisserve"), "package", "--model", str(MODEL / "model.joblib"), "--data", str(MODEL / "data.csv"),
         "--target", "target", "--name", "wide", "--out", str(artifact)],
        check=True,
    )
    return artifact


def percentiles(values: list[float]) -> tuple[float, float]:
    values = sorted(values)
    return values[len(values) // 2] * 1e3, values[int(len(values) * 0.99)] * 1e3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-age", default="1", help="IRISSERVE_METRICS_MAX_AGE_SECONDS for the server (default 1)")
    args = parser.parse_args()
    artifact = package_wide_model()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "IRISSERVE_MODEL_DIR": str(artifact), "IRISSERVE_LOG_LEVEL": "warning",
           "IRISSERVE_METRICS_MAX_AGE_SECONDS": args.max_age}
    base = f"http://127.0.0.1:{port}"
    with open(MODEL / "server.log", "wb") as log:
        server = subprocess.Popen([str(BIN / "uvicorn"), "irisserve.web.app:app", "--port", str(port)], env=env, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        for _ in range(300):
            try:
                if httpx.get(base + "/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        row = {f"x{i}": 0.5 for i in range(FEATURES)}
        with httpx.Client(base_url=base, timeout=30) as client:
            for _ in range(10):
                client.post("/predict/batch", json={"instances": [row] * 1000})  # fills the drift window

            def scrape() -> float:
                client.post("/predict", json=row)
                started = time.perf_counter()
                client.get("/metrics")
                return time.perf_counter() - started

            def predict(count: int = 400) -> tuple[float, float]:
                timings = []
                for _ in range(count):
                    started = time.perf_counter()
                    client.post("/predict", json=row)
                    timings.append(time.perf_counter() - started)
                return percentiles(timings)

            print(f"one scrape after a row arrives: p50 {percentiles([scrape() for _ in range(40)])[0]:.1f} ms")
            print("/predict alone: p50 {:.2f} ms, p99 {:.2f} ms".format(*predict()))
            # The reference: 4 clients as busy on /health, which costs next to nothing. What they do to /predict is
            # the price of sharing the machine's cores with 4 busy clients, whatever they ask for.
            for path, label in (("/metrics", "4 scrapers"), ("/health", "4 clients on /health (reference)")):
                clients = [subprocess.Popen([sys.executable, "-c", SCRAPER, base + path, "60"]) for _ in range(4)]
                time.sleep(1.0)
                print(f"/predict beside {label}: p50 %.2f ms, p99 %.2f ms" % predict())
                for process in clients:
                    process.kill()
                    process.wait()
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
