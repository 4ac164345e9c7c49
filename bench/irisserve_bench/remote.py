"""Remote mode: the deployed services behind their URLs, measured from this machine with httpx.

Against a URL the benchmark cannot start a process, so "cold" means only the first request after
the service has been idle (``--idle-seconds``); whether the platform actually scaled to zero in
that time, and how long a new instance took, is not visible from outside. The first request also
pays this client's DNS lookup and TLS handshake."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

from irisserve_bench.errors import BenchError, answer_error, transport_error
from irisserve_bench.load import LoadResult
from irisserve_bench.stats import cdf_ms

NOT_MEASURED = (
    "Cold start inside the platform (instance scheduling, container or function start, model load) cannot be "
    "separated from outside; the 'first request' is the first request after --idle-seconds of idleness, and "
    "includes DNS, TCP and TLS set-up from this machine. Resident memory is not visible remotely."
)


@dataclass(frozen=True)
class RemoteTarget:
    """A deployed pattern: Cloud Run gets POST {url}/predict, the function POST {url} (its root)."""

    name: str
    predict_url: str
    payload: Mapping[str, Any]

    @classmethod
    def cloud_run(cls, url: str, payload: Mapping[str, Any]) -> RemoteTarget:
        return cls("cloud-run", url.rstrip("/") + "/predict", payload)

    @classmethod
    def cloud_function(cls, url: str, payload: Mapping[str, Any]) -> RemoteTarget:
        return cls("cloud-function", url, payload)


def post_once(client: httpx.Client, url: str, payload: Mapping[str, Any], *, timeout: float) -> tuple[float, dict[str, Any]]:
    """One prediction; returns (seconds, answer) or raises BenchError saying what went wrong."""
    started = time.perf_counter()
    try:
        answer = client.post(url, json=payload, timeout=timeout)
    except httpx.HTTPError as exc:
        raise transport_error("POST", url, exc, timeout=timeout) from None
    elapsed = time.perf_counter() - started
    if answer.status_code != 200:
        raise answer_error("POST", url, answer.status_code, answer.content)
    try:
        body = json.loads(answer.content)
    except ValueError:
        kind = answer.headers.get("content-type", "no content type")
        raise answer_error("POST", url, 200, answer.content, reason=f"answered 200 but not JSON ({kind})") from None
    if not isinstance(body, dict) or "prediction" not in body:
        raise answer_error("POST", url, 200, answer.content, reason="answered JSON without a 'prediction'")
    return elapsed, body


def _warm(client: httpx.Client, target: RemoteTarget, requests: int, concurrency: int, timeout: float, tick: Callable[[int], None]) -> LoadResult:
    result = LoadResult(target.predict_url, concurrency, requests)

    def one(_: int) -> None:
        try:
            elapsed, _body = post_once(client, target.predict_url, target.payload, timeout=timeout)
            result.latencies_s.append(elapsed)
        except BenchError as exc:
            result.record_error(str(exc))
        tick(1)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, range(requests)))
    result.elapsed_s = time.perf_counter() - started
    return result


def run_remote(
    targets: list[RemoteTarget],
    *,
    requests: int,
    concurrency: int,
    idle_seconds: float,
    timeout: float,
    tick: Callable[[int], None] = lambda _: None,
) -> dict[str, Any]:
    """First request after idling, then warm requests, for each target; targets alternate at each step."""
    clients = {target.name: httpx.Client(limits=httpx.Limits(max_connections=max(concurrency, 1))) for target in targets}
    try:
        if idle_seconds > 0:
            time.sleep(idle_seconds)
        first = {}
        for target in targets:
            seconds, body = post_once(clients[target.name], target.predict_url, target.payload, timeout=timeout)
            first[target.name] = {"seconds": seconds, "answer": body}
            tick(1)
        results: dict[str, Any] = {}
        sequential = {target.name: LoadResult(target.predict_url, 1, requests) for target in targets}
        for _ in range(requests):  # interleaved, request by request, so both see the same network
            for target in targets:
                try:
                    elapsed, _body = post_once(clients[target.name], target.predict_url, target.payload, timeout=timeout)
                    sequential[target.name].latencies_s.append(elapsed)
                except BenchError as exc:
                    sequential[target.name].record_error(str(exc))
                tick(1)
        for target in targets:
            concurrent = _warm(clients[target.name], target, requests, concurrency, timeout, tick) if concurrency > 1 else None
            seq = sequential[target.name]
            seq.elapsed_s = sum(seq.latencies_s)
            results[target.name] = {
                "url": target.predict_url,
                "first_request": first[target.name],
                "sequential": {**seq.as_dict(), "cdf_ms": cdf_ms(seq.latencies_s)},
                "concurrent": {**concurrent.as_dict(), "cdf_ms": cdf_ms(concurrent.latencies_s)} if concurrent else None,
            }
        return {"idle_seconds_before_first_request": idle_seconds, "not_measured": NOT_MEASURED, "patterns": results}
    finally:
        for client in clients.values():
            client.close()
