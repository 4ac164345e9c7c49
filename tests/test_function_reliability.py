"""The function under functions-framework's gunicorn: SIGTERM loses no request, slow clients starve no one, every
log line is JSON. Real processes (cloud_function/main.py as deployed), as in tests/test_reliability.py for the web."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from irisserve.core.predictor import Predictor
from irisserve.core.settings import Settings
from irisserve.function.server import DrainingUvicornWorker, gunicorn_options
from support import REPO_ROOT, SEED_EXAMPLE, free_port, function_command, function_env, run_server
from test_function import function_app
from test_reliability import sigterm_under_load

CLOUD_RUN_GRACE_S = 10  # SIGTERM to SIGKILL
READ_TIMEOUT_S = 3.0  # IRISSERVE_READ_TIMEOUT_SECONDS for the slow-client test (10 s in production)
SEED_BODY = json.dumps(SEED_EXAMPLE).encode()
SLOW_HEAD = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(SEED_BODY)


UNTUNED_SOURCE = """
import importlib.util
from functions_framework._http import gunicorn

original = gunicorn.UvicornApplication
spec = importlib.util.spec_from_file_location("deployed_main", {main!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
gunicorn.UvicornApplication = original  # as if an upgrade had bypassed irisserve's replacement
predict = module.predict
"""


def test_the_server_functions_framework_builds_is_the_tuned_one(model_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    with run_server(function_command(port), port=port, log_path=tmp_path / "fn.log", env=function_env(model_dir), ready_path="/") as server:
        assert httpx.post(server.base_url, json=SEED_EXAMPLE).status_code == 200
    assert "gunicorn tuned by irisserve: DrainingUvicornWorker" in server.log() and "without irisserve's tuning" not in server.log()


def test_a_bypassed_tuning_is_an_error_line_at_start(model_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "untuned.py"
    source.write_text(UNTUNED_SOURCE.format(main=str(REPO_ROOT / "cloud_function" / "main.py")))
    port = free_port()
    with run_server(function_command(port, source), port=port, log_path=tmp_path / "fn.log", env=function_env(model_dir), ready_path="/") as server:
        assert httpx.post(server.base_url, json=SEED_EXAMPLE).status_code == 200
    log = server.log()
    assert "without irisserve's tuning (functions-framework 3.10.2, gunicorn 27.0.1)" in log and "ERROR" in log


def test_gunicorn_options_fit_cloud_runs_ten_seconds() -> None:
    options = gunicorn_options(Settings(drain_seconds=3))
    assert options["graceful_timeout"] < CLOUD_RUN_GRACE_S and options["worker_class"] is DrainingUvicornWorker


# --- SIGTERM ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("workers", "load"), [(1, "lazy"), (2, "lazy"), (1, "import"), (2, "import")])
def test_sigterm_under_keep_alive_load_loses_no_request(model_dir: Path, tmp_path: Path, workers: int, load: str) -> None:
    port = free_port()
    env = function_env(model_dir, WORKERS=str(workers), IRISSERVE_FUNCTION_LOAD=load, IRISSERVE_DRAIN_SECONDS="1")
    with run_server(function_command(port), port=port, log_path=tmp_path / "fn.log", env=env, ready_path="/") as server:
        result, answered_before, code, exited = sigterm_under_load(server, port)  # SIGTERM to the master only
    print(f"\n{workers} worker(s), {load}: {result.answered} answered, {len(result.lost)} lost, {result.refused} refused at connect, exit {code} after {exited:.2f} s")
    assert answered_before > 100 and result.answered > answered_before
    assert result.lost == [], f"{len(result.lost)} requests sent without an answer: {result.lost[:3]}"
    assert set(result.statuses) == {200}
    assert code == 0 and exited < CLOUD_RUN_GRACE_S, (code, exited)
    log = server.log()
    assert log.count("draining for 1.0 s") == workers and "Traceback" not in log and "SIGKILL" not in log


def test_readiness_turns_503_at_once_and_answers_close_their_connection(model_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    env = function_env(model_dir, IRISSERVE_DRAIN_SECONDS="1")
    with run_server(function_command(port), port=port, log_path=tmp_path / "fn.log", env=env, ready_path="/") as server:
        os.kill(server.process.pid, signal.SIGTERM)
        time.sleep(0.3)
        health = httpx.get(server.base_url)
        assert health.status_code == 503 and health.json()["status"] == "unavailable: draining"
        assert health.headers["connection"] == "close"
        prediction = httpx.post(server.base_url, json=SEED_EXAMPLE)
        assert prediction.status_code == 200 and prediction.headers["connection"] == "close"
        assert server.process.wait(timeout=15) == 0


# --- slow clients -------------------------------------------------------------------------------------------


@dataclass
class SlowClient:
    """A raw connection that sends ``request`` one byte per tick, from ``first`` bytes sent at once."""

    sock: socket.socket
    request: bytes
    sent: int
    received: bytes = b""
    cut_after: float | None = None  # seconds from connecting until the server closed (or reset) it

    def tick(self, started: float) -> None:
        """Read what the server sent first, then send the next byte: a byte sent after the server answered and
        closed makes its kernel reset the connection, and a reset discards the answer still unread here."""
        try:
            while chunk := self.sock.recv(65536):
                self.received += chunk
        except BlockingIOError:
            try:
                if self.sent < len(self.request):
                    self.sent += self.sock.send(self.request[self.sent : self.sent + 1])
                return
            except BlockingIOError:
                return
            except OSError:
                pass
        except OSError:
            pass
        self.cut_after = time.monotonic() - started  # end of input, a reset or a refused send


def open_slow_client(port: int, request: bytes, first: int) -> SlowClient:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(request[:first])
    sock.setblocking(False)
    return SlowClient(sock, request, first)


def dribble(clients: list[SlowClient], started: float, until: float, tick_s: float = 0.5) -> None:
    """One byte per client per tick until the server has cut every one or ``until`` passes (bounded)."""
    while time.monotonic() < until and any(client.cut_after is None for client in clients):
        for client in clients:
            if client.cut_after is None:
                client.tick(started)
        time.sleep(tick_s)


def test_fifty_slow_clients_starve_no_healthy_request_and_are_cut_at_the_read_deadline(model_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    env = function_env(model_dir, IRISSERVE_READ_TIMEOUT_SECONDS=str(READ_TIMEOUT_S))
    with run_server(function_command(port), port=port, log_path=tmp_path / "fn.log", env=env, ready_path="/") as server:
        slow: list[SlowClient] = []
        try:
            started = time.monotonic()
            # 45 send their head one byte at a time; 5 send the head at once, then the body one byte at a time.
            slow += [open_slow_client(port, SLOW_HEAD + SEED_BODY, first=1) for _ in range(45)]
            slow += [open_slow_client(port, SLOW_HEAD + SEED_BODY, first=len(SLOW_HEAD) + 1) for _ in range(5)]
            dribbler = threading.Thread(target=dribble, args=(slow, started, started + READ_TIMEOUT_S + 5))
            dribbler.start()
            time.sleep(1.0)  # every slow client now holds a thread
            latencies, statuses = [], []
            with httpx.Client(timeout=10) as healthy:
                for _ in range(20):
                    sent = time.monotonic()
                    statuses.append(healthy.post(server.base_url, json=SEED_EXAMPLE, headers={"Connection": "close"}).status_code)
                    latencies.append(time.monotonic() - sent)
            held = sum(client.cut_after is None for client in slow)
            dribbler.join(timeout=READ_TIMEOUT_S + 10)
        finally:
            for client in slow:
                client.sock.close()
    print(f"\n20 healthy POSTs beside 50 slow clients: slowest {max(latencies) * 1000:.0f} ms; slow clients cut after "
          f"{min(c.cut_after or 0 for c in slow):.1f}-{max(c.cut_after or 0 for c in slow):.1f} s")
    assert statuses == [200] * 20 and max(latencies) < 2.0, latencies
    assert held == 50, "the slow clients were cut before the healthy requests ran: the test proved nothing"
    assert all(client.cut_after is not None and READ_TIMEOUT_S - 0.5 <= client.cut_after <= READ_TIMEOUT_S + 3 for client in slow), [
        client.cut_after for client in slow
    ]
    head_only, with_body = slow[:45], slow[45:]
    assert all(client.received == b"" for client in head_only)  # no complete head: the connection closes unanswered
    for client in with_body:
        head, _, body = client.received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408") and b"connection: close" in head.lower(), client.received[:200]
        assert "did not arrive in time" in json.loads(body)["detail"]
    log = server.log()
    assert log.count("No complete request head") == 45 and "Traceback" not in log


def test_a_body_cut_short_is_a_client_gone_not_a_server_error(model_dir: Path, tmp_path: Path) -> None:
    """As on the web service: one INFO line, no answer (nobody is left to read it), no error."""
    port = free_port()
    with (
        run_server(function_command(port), port=port, log_path=tmp_path / "fn.log", env=function_env(model_dir), ready_path="/") as server,
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
    ):
        sock.sendall(SLOW_HEAD.replace(b"%d" % len(SEED_BODY), b"5000") + SEED_BODY)
        sock.shutdown(socket.SHUT_WR)  # the client is done: 4,900 bytes short
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        assert httpx.post(server.base_url, json=SEED_EXAMPLE).status_code == 200
    assert answer == b""
    log = server.log()
    assert "disconnected before sending the whole body" in log
    assert '"severity": "ERROR"' not in log and "Traceback" not in log


# --- logs ---------------------------------------------------------------------------------------------------


def test_every_line_the_function_writes_is_json(model_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    env = function_env(model_dir, IRISSERVE_LOG_FORMAT="json", IRISSERVE_DRAIN_SECONDS="0.5")
    with run_server(function_command(port), port=port, log_path=tmp_path / "fn.log", env=env, ready_path="/") as server:
        with httpx.Client(base_url=server.base_url, timeout=10) as client:
            assert client.post("/", json=SEED_EXAMPLE).status_code == 200
            assert client.post("/", json={}).status_code == 422
            assert client.post("/", content=b"x" * 2_000_000).status_code == 413
        server.process.terminate()
        assert server.process.wait(timeout=15) == 0
    entries = [json.loads(line) for line in server.log().splitlines() if line.strip()]  # raises on any other line
    assert all(isinstance(entry["severity"], str) and isinstance(entry["message"], str) for entry in entries)
    messages = [entry["message"] for entry in entries]
    assert any(message.startswith("Model iris 1.0.0 loaded") for message in messages)
    requests = [entry for entry in entries if entry.get("logger") == "irisserve.access"]
    assert [entry["message"].rsplit(" ", 1)[0] for entry in requests[-3:]] == ["POST / 200", "POST / 422", "POST / 413"]
    assert [entry["severity"] for entry in requests[-3:]] == ["INFO", "WARNING", "WARNING"]
    assert requests[-1]["httpRequest"]["status"] == 413 and requests[-1]["httpRequest"]["latency"].endswith("s")
    assert any(message.startswith("SIGTERM: draining") for message in messages)


def test_an_unexpected_error_is_one_json_line_holding_its_traceback(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(self: Predictor, matrix: Any, *texts: Any, **options: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(Predictor, "predict", explode)
    with function_app(function_env(model_dir, IRISSERVE_LOG_FORMAT="json")) as client:
        (handler,) = logging.getLogger("irisserve").handlers  # main.py's import configured it
        captured = io.StringIO()
        previous = handler.setStream(captured)  # type: ignore[attr-defined]
        try:
            assert client.post("/", json=SEED_EXAMPLE).status_code == 500
        finally:
            handler.setStream(previous)  # type: ignore[attr-defined]
    (line,) = [line for line in captured.getvalue().splitlines() if "Unhandled error" in line]
    entry = json.loads(line)
    assert entry["severity"] == "ERROR" and entry["message"].startswith("Unhandled error on POST /")
    assert "Traceback (most recent call last)" in entry["message"] and "RuntimeError: boom" in entry["message"]
    assert all(json.loads(other) for other in captured.getvalue().splitlines())
