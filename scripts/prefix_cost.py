"""In-process CPU per POST /predict through the whole web app (every middleware), at the root and behind a prefix
(uvicorn's --root-path, and a Starlette Mount): median of 5 repeats of 20,000 requests each.

    .venv/bin/python scripts/prefix_cost.py [MODEL_DIR]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.routing import Mount

from irisserve.core.predictor import Predictor
from irisserve.core.settings import Settings
from irisserve.web.app import create_app

CALLS = 20_000  # typed_cpu.py sets its own
REPEATS = 5


def scope_for(path: str, root_path: str = "") -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": path, "raw_path": path.encode(), "root_path": root_path, "query_string": b"",
        "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000),
    }


async def answer_200(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def cpu_per_request(app: Any, path: str, root_path: str, body: bytes) -> float:
    sent: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            sent.append(message["status"])

    for _ in range(500):
        await app(scope_for(path, root_path), receive, send)
    started = time.process_time()
    for _ in range(CALLS):
        await app(scope_for(path, root_path), receive, send)
    seconds = time.process_time() - started
    assert set(sent) == {200}, set(sent)
    return seconds / CALLS * 1e6


def main() -> None:
    model_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "models/iris/1.0.0")
    settings = Settings(model_dir=model_dir, log_format="text", log_level="warning")
    predictor = Predictor(model_dir)
    predictor.load()
    app = create_app(settings, predictor)
    mounted = Starlette(routes=[Mount("/iris", app=app)])
    mount_alone = Starlette(routes=[Mount("/iris", app=answer_200)])  # what the outer app and its Mount cost by themselves
    body = json.dumps(predictor.spec.example).encode()
    cases = {
        "root": (app, "/predict", ""), "--root-path /iris": (app, "/iris/predict", "/iris"),
        "Mount('/iris')": (mounted, "/iris/predict", ""), "Mount, empty app": (mount_alone, "/iris/predict", ""),
    }
    results: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(REPEATS):
        for name, (target, path, root) in cases.items():
            results[name].append(asyncio.run(cpu_per_request(target, path, root, body)))
    root = statistics.median(results["root"])
    for name, runs in results.items():
        value = statistics.median(runs)
        print(f"{name:>18}: {value:6.1f} µs CPU per /predict (median of {REPEATS}; {value / root:.2f}× the root)")


if __name__ == "__main__":
    main()
