"""gunicorn as functions-framework runs the function: a drain on SIGTERM that loses no request, a read deadline
per request, threads for slow clients, and irisserve's log format for every line.

functions-framework imports ``main.py`` first, then builds its ``GunicornApplication`` with only bind, workers,
threads, loglevel and timeout (gunicorn's BaseApplication ignores GUNICORN_CMD_ARGS). ``main.py`` calls
``install()``, which puts ``TunedApplication`` in its place: the same application with the options below.

On SIGTERM gunicorn's gthread worker stopped accepting at once and closed its copy of the listener, the last one
(the master closes its own at SIGTERM): the connections still in the kernel's accept queue, whose clients had
already sent their request, were reset (32 keep-alive clients lost 32 requests). ``DrainingWorker`` instead
turns readiness to 503 and answers with ``Connection: close`` for ``IRISSERVE_DRAIN_SECONDS``, then stops the
kernel completing new connections, serves the ones it already completed, and gives requests in flight
``IRISSERVE_FINISH_SECONDS``, as ``irisserve.ops.server`` does for the web service.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import math
import os
import select
import signal
import socket
import time
from concurrent.futures import Future
from types import FrameType
from typing import Any

from functions_framework._http import gunicorn as framework_gunicorn
from gunicorn.glogging import Logger  # type: ignore[import-untyped]
from gunicorn.http.errors import NoMoreData  # type: ignore[import-untyped]
from gunicorn.workers.gthread import TConn, ThreadWorker  # type: ignore[import-untyped]

from irisserve.core.settings import Settings, get_settings
from irisserve.ops.lifecycle import begin_draining, is_draining
from irisserve.ops.listener import take_accept_queue
from irisserve.ops.request_log import CloudLoggingFormatter, RequestLog, configure_logging
from irisserve.ops.tracing import read_headers

logger = logging.getLogger("irisserve")

# functions-framework's variable for threads per worker; when it is set, it wins.
THREADS_ENV = "THREADS"
# Without it, functions-framework runs 4 threads per CPU and 8 slow clients held every thread of a 2-CPU
# instance. A thread is started only when the pool needs one, so the ceiling costs nothing while idle.
DEFAULT_THREADS = 64
# Idle keep-alive connections are kept this long: uvicorn's default, so both front doors agree.
KEEPALIVE_S = 5
# After the drain, requests in flight may take IRISSERVE_FINISH_SECONDS. gunicorn's graceful_timeout, the
# master's deadline before SIGKILL counted from SIGTERM, is drain + finish + MASTER_MARGIN_S: 9 s with the
# defaults, inside Cloud Run's 10 s. (gunicorn's default of 30 s outlived the instance.)
MASTER_MARGIN_S = 1
# After a read timeout the connection lingers this long (FIN sent, input dropped) so the client reads its
# answer rather than a reset. Spent on the request's thread, not on gunicorn's event loop.
LINGER_S = 1.0

_request_log: RequestLog | None = None


def install(settings: Settings | None = None) -> None:
    """Log in irisserve's format and have functions-framework run gunicorn as ``TunedApplication``.

    main.py calls this at import, in gunicorn's master before any worker forks and before import mode
    loads the model (so that line is logged too)."""
    global _request_log
    _request_log = configure_logging(settings or get_settings())
    framework_gunicorn.GunicornApplication = TunedApplication  # type: ignore[misc]  # replacing its class is the point
    os.register_at_fork(after_in_child=_check_tuned)


# Set in gunicorn's master when it builds a DrainingWorker, before it forks the worker process.
_tuned_worker = False
UNTUNED = (
    "functions-framework started gunicorn without irisserve's tuning (functions-framework %s, gunicorn %s): no drain "
    "on SIGTERM, no read deadline, %s threads. It replaces functions-framework's private GunicornApplication; pin "
    "functions-framework==3.10.2 and gunicorn==27.0.1 (requirements-function.txt) or update irisserve.function.server."
)


def _check_tuned() -> None:
    """In a forked worker: say loudly if functions-framework bypassed ``TunedApplication`` (an upgrade that
    renamed or stopped using its GunicornApplication would do it silently)."""
    if _tuned_worker:
        logger.info("gunicorn tuned by irisserve: %s", DrainingWorker.__name__)
        return
    from importlib.metadata import version

    logger.error(UNTUNED, version("functions-framework"), version("gunicorn"), os.environ.get(THREADS_ENV, "default"))


def gunicorn_options(settings: Settings) -> dict[str, Any]:
    """irisserve's gunicorn options; bind, workers (WORKERS), loglevel and timeout stay functions-framework's."""
    options: dict[str, Any] = {
        "keepalive": KEEPALIVE_S,
        "graceful_timeout": math.ceil(settings.drain_seconds) + settings.finish_seconds + MASTER_MARGIN_S,
        "worker_class": DrainingWorker,
        "logger_class": IrisServeLogger,
    }
    if not os.environ.get(THREADS_ENV):
        options["threads"] = DEFAULT_THREADS
    return options


class TunedApplication(framework_gunicorn.GunicornApplication):
    """functions-framework's gunicorn application with ``gunicorn_options`` on top of its own."""

    def __init__(self, app: Any, host: str, port: int, debug: bool, **options: Any) -> None:
        super().__init__(app, host, port, debug, **{**gunicorn_options(get_settings()), **options})


# --- logs ------------------------------------------------------------------------------------------------


class IrisServeLogger(Logger):  # type: ignore[misc]
    """gunicorn's logger, with its own lines in irisserve's format (JSON when it is on) and one line per
    request written by the web service's request log (``irisserve.ops.request_log``)."""

    def __init__(self, cfg: Any) -> None:
        self.request_log = _request_log or configure_logging(get_settings())
        super().__init__(cfg)

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        if self.request_log.json_lines:
            for handler in self.error_log.handlers:
                handler.setFormatter(CloudLoggingFormatter())

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: datetime.timedelta) -> None:
        try:
            address = environ.get("REMOTE_ADDR")
            scope = {
                "method": req.method,
                "path": req.path,
                "query_string": req.query.encode("latin-1", "replace"),
                "client": (address, 0) if address else None,
                "http_version": f"{req.version[0]}.{req.version[1]}",
            }
            raw = [(name.lower().encode("latin-1", "replace"), value.encode("latin-1", "replace")) for name, value in req.headers]
            status = getattr(resp, "status_code", None) or 0
            self.request_log.write(scope, read_headers(raw), status, request_time.total_seconds(), resp.sent)
        except Exception:  # called in gunicorn's request path: a log line must never fail a request
            logger.exception("Could not write the request log line")


# --- slow clients ----------------------------------------------------------------------------------------


class RequestReadTimeout(NoMoreData, TimeoutError):  # type: ignore[misc]
    """A request's head or body did not arrive within ``IRISSERVE_READ_TIMEOUT_SECONDS``. To gunicorn it is a client gone
    (NoMoreData: the connection closes without a traceback); the handler sees a TimeoutError and answers 408."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def __str__(self) -> str:
        return f"No complete request within {self.seconds:g} s"


class DeadlineSocket(socket.socket):
    """A client connection whose blocking reads for one request share one deadline, counted from the request's
    first read. Reads made with a timeout of their own (gunicorn's body drain and close) keep theirs. Past the
    deadline the first read raises RequestReadTimeout and every later one sees the end of input: after the
    handler's 408, functions-framework reads the rest of the body (its ``read_request``) and must not fail."""

    read_timeout: float | None = None
    deadline: float | None = None
    timed_out = False
    request: Any = None  # gunicorn's parsed request, once its head has arrived

    @classmethod
    def adopt(cls, sock: socket.socket) -> DeadlineSocket:
        timeout = sock.gettimeout()
        adopted = cls(sock.family, sock.type, sock.proto, fileno=sock.detach())
        adopted.settimeout(timeout)
        return adopted

    def start_request(self, seconds: float) -> None:
        self.read_timeout, self.deadline, self.request = seconds, None, None

    def end_request(self) -> None:
        self.read_timeout = None

    def recv(self, bufsize: int, flags: int = 0, /) -> bytes:
        if self.timed_out:
            return b""
        if self._bounded():
            with contextlib.suppress(BlockingIOError):  # usually the bytes are there: one system call
                return super().recv(bufsize, flags | socket.MSG_DONTWAIT)
            self._await_input()
        return super().recv(bufsize, flags)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0, /) -> int:
        if self.timed_out:
            return 0
        if self._bounded():
            with contextlib.suppress(BlockingIOError):
                return super().recv_into(buffer, nbytes, flags | socket.MSG_DONTWAIT)
            self._await_input()
        return super().recv_into(buffer, nbytes, flags)

    def _bounded(self) -> bool:
        """Serving a request with a blocking read (gunicorn's drain and close set timeouts of their own);
        the request's deadline starts with its first read."""
        if self.read_timeout is None or self.gettimeout() is not None:
            return False
        if self.deadline is None:
            self.deadline = time.monotonic() + self.read_timeout
        return True

    def _await_input(self) -> None:
        assert self.deadline is not None and self.read_timeout is not None
        left = self.deadline - time.monotonic()
        if left > 0 and _readable(self, left):
            return
        self.timed_out = True
        if self.request is not None:  # the answer (the handler's 408) closes the connection and says so
            self.request.must_close = True
        raise RequestReadTimeout(self.read_timeout)

    def linger(self) -> None:
        """After a timeout: send FIN and drop what the client still sends for up to LINGER_S, so it reads its
        answer rather than a reset (gunicorn's own close, on its event loop, then returns at once)."""
        with contextlib.suppress(OSError):
            self.shutdown(socket.SHUT_WR)
            ends = time.monotonic() + LINGER_S
            while (left := ends - time.monotonic()) > 0:
                self.settimeout(left)
                if not super().recv(4096):
                    break


def _readable(sock: socket.socket, seconds: float) -> bool:
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(seconds * 1000))


# --- drain -----------------------------------------------------------------------------------------------

class DrainingWorker(ThreadWorker):  # type: ignore[misc]
    """gunicorn's gthread worker with the drain described above and a read deadline on every request.

    SIGTERM: readiness 503 and ``Connection: close`` for the drain; then gthread's own shutdown (no more
    accepting, kept-alive connections closed within 2 s, requests in flight finished) with this worker's
    accept queue taken first and IRISSERVE_FINISH_SECONDS as its limit."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        global _tuned_worker
        _tuned_worker = True
        super().__init__(*args, **kwargs)
        settings = get_settings()
        self.drain_seconds, self.finish_seconds, self.read_timeout = settings.drain_seconds, settings.finish_seconds, settings.read_timeout_seconds
        self._drain_ends: float | None = None
        self._in_flight: set[Any] = set()  # connections on the thread pool (touched on the event loop only)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain_ends is not None or not self.alive:
            return
        begin_draining()
        self._drain_ends = time.monotonic() + self.drain_seconds
        logger.warning("%s: draining for %.1f s (readiness 503, answers close their connection)", signal.Signals(sig).name, self.drain_seconds)
        self.method_queue.defer(_wake)  # the event loop may be waiting a second: make it wait no later than the drain's end

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        if self._drain_ends is not None and self.alive:
            left = self._drain_ends - time.monotonic()
            if left <= 0:
                self._stop_accepting()
                return
            timeout = min(timeout, left)
        super().wait_for_and_dispatch_events(timeout)

    def _stop_accepting(self) -> None:
        """End the drain: gthread's shutdown follows (``alive`` is false), with the finish time for requests in
        flight, and the connections the kernel already completed are served rather than reset at close."""
        self.alive = False
        self.cfg.set("graceful_timeout", self.finish_seconds)  # this process's copy of the settings
        taken = 0
        for listener in self.sockets:
            server = listener.getsockname()
            for client, address in take_accept_queue(listener):
                self.nr_conns += 1
                self.enqueue_req(TConn(self.cfg, client, address, server))
                taken += 1
        logger.info("Drain over: no longer accepting; serving %d queued connections and those in flight", taken)

    def run(self) -> None:
        super().run()
        # Past the finish time: wake the threads still reading from a client, so this process exits now rather than
        # when their read deadline passes (the master would SIGKILL it at graceful_timeout).
        for conn in self._in_flight:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)

    def enqueue_req(self, conn: Any) -> None:
        if not isinstance(conn.sock, DeadlineSocket):  # a new connection (its parser reads through conn.sock)
            conn.sock = DeadlineSocket.adopt(conn.sock)
        self._in_flight.add(conn)
        super().enqueue_req(conn)

    def finish_request(self, conn: Any, fs: Future[Any]) -> None:
        self._in_flight.discard(conn)
        super().finish_request(conn, fs)

    def handle(self, conn: Any) -> Any:
        sock: DeadlineSocket = conn.sock
        sock.start_request(self.read_timeout)
        try:
            result = super().handle(conn)
        finally:
            sock.end_request()
        if not sock.timed_out:
            return result
        if sock.request is None:
            logger.warning("No complete request head from %s within %g s; connection closed", _peer(conn), self.read_timeout)
        sock.linger()
        return False

    def handle_request(self, req: Any, conn: Any) -> bool:
        conn.sock.request = req
        if is_draining():  # gunicorn drops an application's Connection header (hop-by-hop), so say it here
            req.must_close = True
        keepalive: bool = super().handle_request(req, conn)
        return keepalive and not conn.sock.timed_out


def _peer(conn: Any) -> str:
    client = conn.client
    return str(client[0]) if isinstance(client, tuple) and client else str(client)


def _wake() -> None:
    """Queued on the worker's event loop only to end its wait."""
