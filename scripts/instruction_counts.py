"""CPU instructions (valgrind's callgrind: a count the machine's load does not move) for the start-up to a first answer
and for one /predict, irisserve against the bare reference app, and the function through functions-framework's app
against the direct path its server takes (``irisserve.function.server.direct_requests``).

    .venv/bin/python scripts/instruction_counts.py [--requests 2000] [--model-dir models/iris/1.0.0]

Each case runs in its own interpreter under callgrind, in process (the ASGI app driven directly, no sockets): start-up is
an interpreter's whole run up to the first 200 (``irisserve serve``'s own code path with uvicorn's server loop left
out, against ``uvicorn.Config("bare_app:app").load()``); a request's cost is (a run with N requests − a run with none) / N.
Two runs at a time, about three minutes on 2 cores. Needs valgrind (Debian's package)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from prefix_cost import scope_for

ROOT = Path(__file__).resolve().parents[1]
REFERENCES = ROOT / "bench" / "irisserve_bench" / "references"
FUNCTION_SOURCE = ROOT / "cloud_function" / "main.py"


async def post(app: Any, path: str, body: bytes, count: int) -> None:
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    for _ in range(count):
        await app(scope_for(path), receive, send)
    assert set(statuses) <= {200}, set(statuses)


async def started(app: Any) -> asyncio.Task[None]:
    """The app's lifespan, started (cancel the task to leave it)."""
    events: list[str] = []
    messages = [{"type": "lifespan.startup"}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.Event().wait()
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        events.append(message["type"])

    task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send))
    while not events:
        await asyncio.sleep(0.001)
    assert events == ["lifespan.startup.complete"], events
    return task


def run_case(case: str, count: int, model_dir: Path) -> None:
    """One measured run (in the interpreter callgrind watches)."""
    body = json.dumps(json.loads((model_dir / "manifest.json").read_text())["examples"][0]).encode()

    # start-up: its first answer; a request's cost: 200 warm requests in both runs (they cancel out), then ``count``.
    requests = 1 if case.startswith("start-") else 200 + count

    async def serve_and_post(app: Any, path: str, lifespan: bool = True) -> None:
        task = await started(app) if lifespan else None
        await post(app, path, body, requests)
        if task is not None:
            task.cancel()

    if case == "start-web":
        import irisserve.ops.server as server
        from irisserve.tools.cli import main

        def first_answer(config: Any) -> None:
            config.load()
            asyncio.run(serve_and_post(config.loaded_app, "/predict"))

        server.serve = first_answer  # type: ignore[assignment]
        sys.argv = ["irisserve", "serve", "--model-dir", str(model_dir), "--port", "1"]
        main()
    elif case == "start-bare":
        sys.path.insert(0, str(REFERENCES))
        import uvicorn.main  # noqa: F401  # as the uvicorn command does
        from uvicorn.config import Config

        config = Config("bare_app:app", log_level="warning")
        config.load()
        asyncio.run(serve_and_post(config.loaded_app, "/predict", lifespan=False))
    elif case == "predict-web":
        from irisserve.core.predictor import Predictor
        from irisserve.core.settings import Settings
        from irisserve.web.app import create_app

        predictor = Predictor(model_dir)
        predictor.load()
        app = create_app(Settings(model_dir=model_dir, log_format="json", log_level="info"), predictor)
        asyncio.run(serve_and_post(app, "/predict"))
    elif case == "predict-bare":
        sys.path.insert(0, str(REFERENCES))
        import bare_app

        asyncio.run(serve_and_post(bare_app.app, "/predict", lifespan=False))
    elif case in ("function-framework", "function-direct"):
        from functions_framework.aio import create_asgi_app

        from irisserve.function.server import direct_requests

        framework_app = create_asgi_app(target="predict", source=str(FUNCTION_SOURCE))
        app = framework_app if case == "function-framework" else direct_requests(framework_app)
        asyncio.run(serve_and_post(app, "/", lifespan=False))
    else:
        raise SystemExit(f"unknown case {case}")


def instructions(case: str, count: int, model_dir: Path) -> int:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "callgrind.out"
        env = {**os.environ, "IRISSERVE_MODEL_DIR": str(model_dir), "IRISSERVE_FUNCTION_LOAD": "import", "IRISSERVE_LOG_LEVEL": "info"}
        result = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, __file__, "--case", case,
             "--requests", str(count), "--model-dir", str(model_dir)],
            cwd=ROOT, env=env, capture_output=True, text=True, check=False,
        )
        found = re.search(r"Collected : (\d+)", result.stderr)
        if result.returncode != 0 or found is None:
            raise SystemExit(f"{case} failed:\n{result.stderr[-3000:]}")
        return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models" / "iris" / "1.0.0")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    model_dir = args.model_dir.resolve()
    if args.case:
        run_case(args.case, 0 if args.case.startswith("start-") else args.requests, model_dir)
        return
    runs = [("start-web", 0), ("start-bare", 0)] + [
        (case, count) for case in ("predict-web", "predict-bare", "function-framework", "function-direct") for count in (0, args.requests)
    ]
    with ThreadPoolExecutor(2) as pool:
        counts = dict(zip(runs, pool.map(lambda run: instructions(run[0], run[1], model_dir), runs), strict=True))
    web, bare = counts[("start-web", 0)], counts[("start-bare", 0)]
    print(f"start-up to the first answer: irisserve serve {web / 1e6:,.0f} M instructions, bare app {bare / 1e6:,.0f} M ({web / bare:.2f}×)")
    per_request = {case: (counts[(case, args.requests)] - counts[(case, 0)]) / args.requests for case in ("predict-web", "predict-bare", "function-framework", "function-direct")}
    for case, cost in per_request.items():
        print(f"{case:>20}: {cost / 1e3:,.1f} K instructions per POST")
    print(f"web ÷ bare per request: {per_request['predict-web'] / per_request['predict-bare']:.2f}×; "
          f"function direct ÷ through functions-framework: {per_request['function-direct'] / per_request['function-framework']:.2f}×")


if __name__ == "__main__":
    main()
