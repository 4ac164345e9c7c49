"""A lean HTTP/1.1 load generator for servers on this machine: keep-alive connections, one per client.

On a 2-core machine the load generator competes with the server for CPU. httpx's AsyncClient spends
about 3 ms of CPU per request (measured here: it held the server to ~25% of a core at 8 concurrent
clients), so it, not the server, would set the throughput. This client writes a pre-encoded request
and reads the answer by Content-Length on asyncio streams (uvloop when installed): about a tenth of
that CPU, which leaves the server the bottleneck. Remote mode uses httpx instead (TLS, proxies).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from irisserve_bench.errors import BenchError
from irisserve_bench.stats import summarize_ms

MAX_ERROR_SAMPLES = 3
Progress = Callable[[int], None]


@dataclass(frozen=True)
class Endpoint:
    """One request, encoded once: method, path and JSON body against a plain-HTTP host:port."""

    host: str
    port: int
    method: str
    path: str
    body: bytes = b""

    @classmethod
    def from_url(cls, url: str, method: str, payload: Any = None) -> Endpoint:
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None:
            raise BenchError(f"{url}: the local load generator speaks plain http://host:port only.")
        body = json.dumps(payload).encode() if payload is not None else b""
        return cls(parts.hostname, parts.port or 80, method, parts.path or "/", body)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.path}"

    def encode(self) -> bytes:
        head = f"{self.method} {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
        if self.body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(self.body)}\r\n"
        return (head + "\r\n").encode() + self.body


@dataclass
class LoadResult:
    """What one load run saw: per-request latencies of the successes, errors, wall time."""

    endpoint: str
    concurrency: int
    requests: int
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    client_cpu_s: float = 0.0

    @property
    def throughput_rps(self) -> float:
        return len(self.latencies_s) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def record_error(self, message: str) -> None:
        self.errors += 1
        if len(self.error_samples) < MAX_ERROR_SAMPLES:
            self.error_samples.append(message)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (latency samples are left out; the caller keeps a CDF instead)."""
        return {
            "endpoint": self.endpoint,
            "concurrency": self.concurrency,
            "requests": self.requests,
            "ok": len(self.latencies_s),
            "errors": self.errors,
            "error_samples": self.error_samples,
            "elapsed_s": self.elapsed_s,
            "throughput_rps": self.throughput_rps,
            "client_cpu_fraction": self.client_cpu_s / self.elapsed_s if self.elapsed_s > 0 else 0.0,
            **summarize_ms(self.latencies_s),
        }


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """Read one response; returns (status, body, server_closes)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length: int | None = None
    chunked = closes = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            closes = value.strip().lower() == b"close"
    if chunked:
        return status, await _read_chunks(reader), closes
    if length is None:
        return status, await reader.read(), True
    return status, await reader.readexactly(length), closes


async def _read_chunks(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return bytes(body)
        body += await reader.readexactly(size)
        await reader.readexactly(2)


class _Run:
    """Shared state of one load run: the request counter and the result the clients fill in."""

    def __init__(self, endpoint: Endpoint, requests: int, concurrency: int, timeout: float, progress: Progress | None) -> None:
        self.endpoint = endpoint
        self.wire = endpoint.encode()
        self.remaining = requests
        self.timeout = timeout
        self.progress = progress
        self.result = LoadResult(endpoint.url, concurrency, requests)

    async def client(self) -> None:
        """One keep-alive connection sending requests back to back until the shared count runs out."""
        connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while self.remaining > 0:
            self.remaining -= 1
            started = time.perf_counter()
            try:
                async with asyncio.timeout(self.timeout):
                    if connection is None:
                        connection = await asyncio.open_connection(self.endpoint.host, self.endpoint.port)
                    connection[1].write(self.wire)
                    status, body, closes = await _read_answer(connection[0])
                elapsed = time.perf_counter() - started
                self._check(status, body)
                self.result.latencies_s.append(elapsed)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, TimeoutError) as exc:
                self.result.record_error(_describe(exc, self.timeout))
                closes = True
            if closes and connection is not None:
                connection[1].close()
                connection = None
            if self.progress is not None:
                self.progress(1)
        if connection is not None:
            connection[1].close()

    def _check(self, status: int, body: bytes) -> None:
        if status != 200:
            raise ValueError(f"HTTP {status}: {body[:120].decode('utf-8', errors='replace')}")
        try:
            json.loads(body)
        except ValueError:
            raise ValueError(f"HTTP 200 but not JSON: {body[:120]!r}") from None


def _describe(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    return f"{type(exc).__name__}: {exc}"


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_load(
    endpoint: Endpoint,
    *,
    requests: int,
    concurrency: int = 1,
    timeout: float = 10.0,
    progress: Progress | None = None,
) -> LoadResult:
    """Send ``requests`` requests from ``concurrency`` keep-alive clients; failures are counted, not raised."""
    run = _Run(endpoint, requests, concurrency, timeout, progress)

    async def main() -> None:
        await asyncio.gather(*(run.client() for _ in range(max(1, min(concurrency, requests)))))

    cpu_started, started = time.process_time(), time.perf_counter()
    with asyncio.Runner(loop_factory=_new_loop) as runner:
        runner.run(main())
    run.result.elapsed_s = time.perf_counter() - started
    run.result.client_cpu_s = time.process_time() - cpu_started
    return run.result
