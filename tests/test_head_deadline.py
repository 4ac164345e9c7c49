"""Slow request heads on both doors (`irisserve serve` and the function under functions-framework): a head still
incomplete IRISSERVE_READ_TIMEOUT_SECONDS after its first byte closes its connection, and healthy requests keep
their latency beside hundreds of such clients. The function's GET answers say ``Vary: Accept``, HEAD gives GET's
headers, and ``X-Request-ID`` is echoed, as on the web service."""

from __future__ import annotations

import socket
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support import SEED_EXAMPLE, RunningServer, free_port, function_command, function_env, run_server

DEADLINE_S = 2.0
SLOW_CLIENTS = 500
HEAD = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10\r\n"


@pytest.fixture(scope="module", params=["web", "function"])
def door(request: pytest.FixtureRequest, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, RunningServer]]:
    port = free_port()
    env = {"IRISSERVE_MODEL_DIR": str(model_dir), "IRISSERVE_READ_TIMEOUT_SECONDS": str(DEADLINE_S)}
    log_path = tmp_path_factory.mktemp(request.param) / "server.log"
    if request.param == "web":
        command = [str(Path(sys.executable).parent / "irisserve"), "serve", "--port", str(port)]
        with run_server(command, port=port, log_path=log_path, env=env) as server:
            yield request.param, server
    else:
        with run_server(function_command(port), port=port, log_path=log_path, env=function_env(model_dir, **env), ready_path="/") as server:
            yield request.param, server


def dribble(sockets: list[socket.socket], closed_after: dict[int, float], started: float, until: float) -> None:
    """The head's next byte on each connection every half second (its first is sent), until each is closed by the
    server or ``until``."""
    sent = 1
    while time.monotonic() < until and len(closed_after) < len(sockets):
        for index, sock in enumerate(sockets):
            if index in closed_after:
                continue
            try:
                sock.send(HEAD[sent % len(HEAD) : sent % len(HEAD) + 1])
                if sock.recv(1, socket.MSG_DONTWAIT) == b"":
                    closed_after[index] = time.monotonic() - started
            except BlockingIOError:
                pass
            except OSError:
                closed_after[index] = time.monotonic() - started
        sent += 1
        time.sleep(0.5)


def test_slow_heads_are_cut_at_the_deadline_and_starve_no_one(door: tuple[str, RunningServer]) -> None:
    name, server = door
    host, port = "127.0.0.1", int(server.base_url.rsplit(":", 1)[1])
    predict_url = server.base_url + ("/predict" if name == "web" else "/")
    sockets = [socket.create_connection((host, port), timeout=5) for _ in range(SLOW_CLIENTS)]
    closed_after: dict[int, float] = {}
    started = time.monotonic()
    try:
        for sock in sockets:
            sock.send(HEAD[:1])
        worker = threading.Thread(target=dribble, args=(sockets, closed_after, started, started + DEADLINE_S + 8))
        worker.start()
        latencies = []
        with httpx.Client(timeout=5) as client:
            for _ in range(30):
                sent = time.perf_counter()
                assert client.post(predict_url, json=SEED_EXAMPLE).status_code == 200
                latencies.append(time.perf_counter() - sent)
                time.sleep(0.02)
        worker.join(timeout=DEADLINE_S + 15)
    finally:
        for sock in sockets:
            sock.close()
    print(f"\n{name}: {len(closed_after)} of {SLOW_CLIENTS} slow heads cut after {min(closed_after.values(), default=0):.1f}-"
          f"{max(closed_after.values(), default=0):.1f} s; healthy p50 {statistics.median(latencies) * 1000:.1f} ms, "
          f"max {max(latencies) * 1000:.1f} ms")
    assert len(closed_after) == SLOW_CLIENTS
    assert all(DEADLINE_S - 0.5 <= seconds <= DEADLINE_S + 3 for seconds in closed_after.values()), sorted(closed_after.values())[:5]
    assert max(latencies) < 1.0, latencies
    assert "No complete request head" in server.log() and "Traceback" not in server.log()


def test_the_functions_get_varies_by_accept_and_head_gives_gets_headers(live_function: RunningServer) -> None:
    with httpx.Client(base_url=live_function.base_url, timeout=10) as client:
        for accept, same in (("application/json", ("content-type", "vary")), ("text/html", ("content-type", "content-length", "vary"))):
            got, head = client.get("/", headers={"Accept": accept}), client.head("/", headers={"Accept": accept})
            assert got.status_code == head.status_code == 200 and head.content == b""
            assert got.headers["vary"] == "Accept" and accept in got.headers["content-type"]
            for header in same:  # the JSON report's length moves with its live figures
                assert head.headers[header] == got.headers[header], header
        echoed = client.post("/", json=SEED_EXAMPLE, headers={"X-Request-ID": "abc-123"})
        assert echoed.headers["x-request-id"] == "abc-123"


def test_a_body_late_past_the_deadline_gets_408_on_both_doors(door: tuple[str, RunningServer]) -> None:
    name, server = door
    port = int(server.base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(HEAD + b"\r\n" + b'{"sepal')  # 7 of the 10 bytes promised
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        waited = time.monotonic() - started
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408") and b"connection: close" in head.lower(), answer[:300]
    assert "did not arrive in time" in body.decode() and DEADLINE_S - 0.1 <= waited <= DEADLINE_S + 2, (name, waited)
    assert httpx.get(server.base_url + ("/health" if name == "web" else "/")).status_code == 200
