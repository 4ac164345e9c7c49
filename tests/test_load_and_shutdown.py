"""Proof under load: a mix of good and hostile requests all get 200/4xx and the metrics count each one;
SIGTERM during load lets in-flight requests finish and the process exits 0 within Cloud Run's 10 s."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from irisserve.ops.lifecycle import MULTIPROC_ENV, drain_on_signals, end_draining, is_draining, multiprocess_metrics_dir
from support import SEED_EXAMPLE, VENV_BIN, RunningServer, free_port, run_server
from test_observability import IRIS, requests_counted, scrape_url, value

CONCURRENCY = 64
LOAD_REQUESTS = 600
LIMIT_BYTES = 1_048_576
CLOUD_RUN_GRACE_S = 10.0
SLOW_UPLOADS = 24
SLOW_CHUNK_GAP_S = 0.4

SEED_JSON = json.dumps(SEED_EXAMPLE).encode()
JSON_HEADERS = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Kind:
    """One kind of request in the mix, with the route it hits and the status it must get."""

    name: str
    method: str
    path: str
    route: str
    status: int
    body: bytes | None = None
    validation_error: bool = False


KINDS = [
    Kind("good", "POST", "/predict", "/predict", 200, SEED_JSON),
    Kind("out of range", "POST", "/predict", "/predict", 200, json.dumps({**SEED_EXAMPLE, "petal_width": 9.0}).encode()),
    Kind("good batch", "POST", "/predict/batch", "/predict/batch", 200, json.dumps({"instances": [SEED_EXAMPLE] * 10}).encode()),
    Kind("negative", "POST", "/predict", "/predict", 422, json.dumps({**SEED_EXAMPLE, "sepal_length": -1}).encode(), True),
    Kind("string", "POST", "/predict", "/predict", 422, json.dumps({**SEED_EXAMPLE, "sepal_width": "wide"}).encode(), True),
    Kind("not json", "POST", "/predict", "/predict", 422, b"sepal_length=5.1", True),
    Kind("truncated json", "POST", "/predict", "/predict", 422, SEED_JSON[:-5], True),
    Kind("empty", "POST", "/predict", "/predict", 422, b"", True),
    Kind("too deep", "POST", "/predict", "/predict", 400, b"[" * 100_000 + b"]" * 100_000),
    Kind("oversized", "POST", "/predict", "/predict", 413, SEED_JSON + b" " * LIMIT_BYTES),
    Kind("too many rows", "POST", "/predict/batch", "/predict/batch", 413, json.dumps({"instances": [SEED_EXAMPLE] * 1001}).encode()),
    Kind("unknown path", "GET", "/nothing/here", "unmatched", 404),
    Kind("health", "GET", "/health", "/health", 200),
]
WEIGHTS = [30, 8, 6, 8, 5, 5, 4, 3, 3, 3, 2, 3, 6]


@dataclass
class LoadResult:
    sent: Counter[tuple[str, str, int]]
    statuses: Counter[int]
    failures: list[str]
    seconds: float


async def run_load(base_url: str, plan: list[Kind]) -> LoadResult:
    semaphore = asyncio.Semaphore(CONCURRENCY)
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as client:

        async def one(kind: Kind) -> None:
            async with semaphore:
                try:
                    response = await client.request(kind.method, kind.path, content=kind.body, headers=JSON_HEADERS)
                except httpx.HTTPError as exc:
                    failures.append(f"{kind.name}: {exc!r}")
                    return
            statuses[response.status_code] += 1
            if response.status_code != kind.status:
                failures.append(f"{kind.name}: {response.status_code} {response.text[:200]}")
            elif response.status_code >= 400 and "detail" not in response.json():
                failures.append(f"{kind.name}: error without detail")

        started = time.perf_counter()
        await asyncio.gather(*(one(kind) for kind in plan))
    sent = Counter((kind.method, kind.route, kind.status) for kind in plan)
    return LoadResult(sent, statuses, failures, time.perf_counter() - started)


def test_load_with_faults_is_answered_and_counted(live_server: RunningServer) -> None:
    plan = random.Random(5).choices(KINDS, weights=WEIGHTS, k=LOAD_REQUESTS)
    before = scrape_url(live_server.base_url)
    result = asyncio.run(run_load(live_server.base_url, plan))
    after = scrape_url(live_server.base_url)

    answered = sum(result.statuses.values())
    server_errors = sum(count for status, count in result.statuses.items() if status >= 500)
    print(
        f"\nload: sent {len(plan)}, answered {answered}, 5xx {server_errors}, in {result.seconds:.2f}s "
        f"with {CONCURRENCY} concurrent; statuses {dict(sorted(result.statuses.items()))}"
    )
    assert result.failures == []
    assert answered == len(plan) and server_errors == 0
    for (method, route, status), count in result.sent.items():
        counted = requests_counted(after, route, status, method) - requests_counted(before, route, status, method)
        assert counted == count, f"{method} {route} {status}: sent {count}, /metrics counted {counted}"
    validation_sent = sum(1 for kind in plan if kind.validation_error)
    validation_counted = value(after, "irisserve_validation_errors_total", route="/predict") - value(
        before, "irisserve_validation_errors_total", route="/predict"
    )
    assert validation_counted == validation_sent
    rows = sum(1 if kind.path == "/predict" else 10 for kind in plan if kind.status == 200 and kind.method == "POST")
    predicted = sum(
        value(after, "irisserve_predictions_total", **IRIS, **{"class": name}) - value(before, "irisserve_predictions_total", **IRIS, **{"class": name})
        for name in ("setosa", "versicolor", "virginica")
    )
    assert predicted == rows
    out_of_range = value(after, "irisserve_out_of_range_inputs_total", feature="petal_width", **IRIS) - value(
        before, "irisserve_out_of_range_inputs_total", feature="petal_width", **IRIS
    )
    assert out_of_range == sum(1 for kind in plan if kind.name == "out of range")


# -- Graceful shutdown ----------------------------------------------------------------------------


async def slow_body(started: asyncio.Event) -> AsyncIterator[bytes]:
    """The seed example in three pieces, spread out so the request is still in flight at SIGTERM."""
    third = len(SEED_JSON) // 3
    yield SEED_JSON[:third]
    started.set()
    await asyncio.sleep(SLOW_CHUNK_GAP_S)
    yield SEED_JSON[third : 2 * third]
    await asyncio.sleep(SLOW_CHUNK_GAP_S)
    yield SEED_JSON[2 * third :]


async def quick_load(client: httpx.AsyncClient, count: int) -> Counter[int]:
    semaphore = asyncio.Semaphore(16)

    async def one() -> int:
        async with semaphore:
            return (await client.post("/predict", json=SEED_EXAMPLE)).status_code

    return Counter(await asyncio.gather(*(one() for _ in range(count))))


async def load_then_sigterm(base_url: str, send_sigterm: Callable[[], None]) -> tuple[Counter[int], list[int | str]]:
    """Steady load, then slow uploads in flight, then SIGTERM; returns both phases' outcomes."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        warm = await quick_load(client, 200)
    events = [asyncio.Event() for _ in range(SLOW_UPLOADS)]
    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=httpx.Limits(max_connections=SLOW_UPLOADS)) as client:

        async def upload(index: int) -> int | str:
            headers = {**JSON_HEADERS, "X-Request-ID": f"in-flight-{index}"}
            try:
                response = await client.post("/predict", content=slow_body(events[index]), headers=headers)
            except httpx.HTTPError as exc:
                return repr(exc)
            return response.status_code

        uploads = [asyncio.create_task(upload(index)) for index in range(SLOW_UPLOADS)]
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in events)), timeout=30)
        await asyncio.sleep(0.1)  # the server has read every request's headers
        send_sigterm()
        outcomes = await asyncio.gather(*uploads)
    return warm, list(outcomes)


def test_sigterm_under_load_drains_in_flight_requests_and_exits_0(model_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {"IRISSERVE_MODEL_DIR": str(model_dir), "PORT": str(port), "IRISSERVE_LOG_FORMAT": "json"}
    with run_server([str(VENV_BIN / "irisserve"), "serve"], port=port, log_path=tmp_path / "serve.log", env=env) as server:
        signalled: list[float] = []

        def send_sigterm() -> None:
            signalled.append(time.monotonic())
            server.process.send_signal(signal.SIGTERM)

        warm, outcomes = asyncio.run(load_then_sigterm(server.base_url, send_sigterm))
        exit_code = server.process.wait(timeout=CLOUD_RUN_GRACE_S + 5)
        exit_seconds = time.monotonic() - signalled[0]
        log_lines = server.log().splitlines()

    print(f"\nshutdown: {sum(warm.values())} requests before SIGTERM {dict(warm)}, {len(outcomes)} in flight at SIGTERM "
          f"{dict(Counter(outcomes))}, exit {exit_code} {exit_seconds:.2f}s after SIGTERM")
    assert warm == Counter({200: 200})
    assert outcomes == [200] * SLOW_UPLOADS  # none refused, none reset
    assert exit_code == 0
    assert exit_seconds < CLOUD_RUN_GRACE_S
    entries = [json.loads(line) for line in log_lines if line.startswith("{")]
    drain_at = next(i for i, entry in enumerate(entries) if "readiness is now false" in entry["message"])
    finished_at = [
        i for i, entry in enumerate(entries)
        if entry.get("logging.googleapis.com/labels", {}).get("request_id", "").startswith("in-flight-")
    ]
    assert len(finished_at) == SLOW_UPLOADS
    assert drain_at < min(finished_at)  # readiness turned false before the in-flight requests completed


def test_drain_hook_marks_draining_then_calls_the_servers_handler() -> None:
    seen: list[int] = []

    def server_handler(sig: int, frame: object) -> None:
        seen.append(sig)

    original = signal.signal(signal.SIGTERM, server_handler)
    try:
        restore = drain_on_signals()
        signal.raise_signal(signal.SIGTERM)
        assert is_draining()
        assert seen == [signal.SIGTERM]
        restore()
        assert signal.getsignal(signal.SIGTERM) is server_handler
    finally:
        signal.signal(signal.SIGTERM, original)
        end_draining()


def test_metrics_folder_only_for_several_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    with multiprocess_metrics_dir(1) as folder:
        assert folder is None and MULTIPROC_ENV not in os.environ
    with multiprocess_metrics_dir(2) as folder:
        assert folder is not None and folder.is_dir() and os.environ[MULTIPROC_ENV] == str(folder)
        assert list(folder.iterdir()) == []
    assert not folder.exists() and MULTIPROC_ENV not in os.environ
