"""uvicorn as `irisserve serve` runs it: bounded request headers, and a drain before shutdown that loses no request.

uvicorn's own shutdown closes its listener and every idle keep-alive connection at once: a client that had
just sent its next request on such a connection gets a reset (32 keep-alive clients lost 32 requests that
way). Here SIGTERM first turns readiness to 503 and answers everything with ``Connection: close`` for
``IRISSERVE_DRAIN_SECONDS``, so clients move to fresh connections (elsewhere, behind a load balancer); then
the listener closes, connections already accepted get a moment to send their request (answered, and
closed), and only then does uvicorn's shutdown close what is left and wait for requests in flight.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.supervisors import multiprocess

from irisserve.core.errors import encode_json
from irisserve.core.settings import get_settings
from irisserve.ops.asgi import DiscardBudget
from irisserve.ops.lifecycle import begin_draining
from irisserve.ops.listener import held_by_parent, take_accept_queue
from irisserve.ops.repository_sync import STATE_DIR_ENV, request_rescan

logger = logging.getLogger("irisserve")

# After the listener closes: how long open connections may take to send their request (the wait ends as soon as
# each has one in progress or is closed; on a loaded machine a client thread can need more than half a second).
ACCEPTED_GRACE_S = 1.0
# After a 431: how much of what the client still sends is read and dropped, and for how long, before closing.
LINGER_BYTES = 1 << 20
LINGER_S = 1.0
HEAD_TOO_SLOW = "No complete request head from %s within %g s (IRISSERVE_READ_TIMEOUT_SECONDS); connection closed"
# uvicorn's exit code when the app cannot start (its STARTUP_FAILURE).
STARTUP_FAILURE = 3


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with bounds on the request line and headers: past
    ``IRISSERVE_MAX_HEADER_BYTES`` the client gets 431 and the connection closes, before the bytes pile up
    (httptools itself buffers a header of any size: a 50 MB header used to reach the app); a head still
    incomplete ``IRISSERVE_READ_TIMEOUT_SECONDS`` after its first byte closes the connection unanswered (a
    client sending one header byte every 20 s used to hold its connection for good)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()
        self._header_limit = settings.max_header_bytes
        self._head_seconds = settings.read_timeout_seconds
        self._head_deadline: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        self._in_headers = True  # the bytes arriving now are a request's head: counted against the limit
        self._head_begun = False  # the parser has begun a head and not finished it: the deadline runs
        self._tail = b""
        self._linger_budget: DiscardBudget | None = None

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_begun = True

    def on_headers_complete(self) -> None:
        self._in_headers = self._head_begun = False
        self._cancel_head_deadline()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # What arrives next on this connection is the next request's head, counted from its first byte (reset at
        # the message's begin instead, a head that arrived whole in one chunk would never be counted).
        self._in_headers = True
        self._header_bytes = 0
        self._tail = b""

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_deadline()
        super().connection_lost(exc)

    def _cancel_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if self._head_begun and not self.transport.is_closing():
            client = self.client[0] if self.client else "a client"
            logger.warning(HEAD_TOO_SLOW, client, self._head_seconds)
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._linger_budget is not None:
            if not self._linger_budget.spend(len(data)):
                self.transport.close()
            return
        if self._in_headers:
            # Count only up to the blank line that ends the headers: the same chunk may carry body bytes.
            # The last three bytes of the previous chunk are searched too, in case the blank line was split.
            end = (self._tail + data).find(b"\r\n\r\n")
            self._header_bytes += len(data) if end < 0 else max(0, end + 4 - len(self._tail))
            self._tail = data[-3:]
            if self._header_bytes > self._header_limit:
                self._refuse_headers()
                return
        super().data_received(data)
        # Armed only for a head that this chunk left incomplete (the parser has just begun or continued it): a head
        # that arrives whole, the usual case, costs no timer.
        if self._head_begun and self._head_deadline is None and self._linger_budget is None and not self.transport.is_closing():
            self._head_deadline = self.loop.call_later(self._head_seconds, self._head_too_slow)

    def _refuse_headers(self) -> None:
        body = encode_json(
            {
                "detail": f"The request line and headers exceed {self._header_limit} bytes (setting "
                "IRISSERVE_MAX_HEADER_BYTES); send smaller headers."
            }
        )
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
            + b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
        )
        self._in_headers = False
        self._cancel_head_deadline()
        # Read and drop what the client is still sending before closing (a close with unread data resets the
        # connection, and the client could lose its 431): at most LINGER_BYTES, for at most LINGER_S.
        self._linger_budget = DiscardBudget(LINGER_BYTES, LINGER_S)
        self.loop.call_later(LINGER_S, self.transport.close)


class DrainingServer(uvicorn.Server):
    """uvicorn's Server with the drain described above (first SIGTERM/SIGINT drains, a second one exits at once)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.drain_seconds = get_settings().drain_seconds
        self._drain_ends: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain_ends is not None or self.should_exit:
            super().handle_exit(sig, frame)
            return
        self._captured_signals.append(sig)  # re-raised after shutdown, as uvicorn does
        begin_draining()
        self._drain_ends = time.monotonic() + self.drain_seconds
        logger.warning("%s: draining for %.1f s (readiness 503, answers close their connection)", signal.Signals(sig).name, self.drain_seconds)

    async def on_tick(self, counter: int) -> bool:
        if self._drain_ends is not None and time.monotonic() >= self._drain_ends:
            self.should_exit = True
        return await super().on_tick(counter)

    async def shutdown(self, sockets: list[Any] | None = None) -> None:
        if self._drain_ends is not None:
            loop = asyncio.get_running_loop()
            if self._listeners_stay_open():
                self._close_listeners(sockets)  # this process stops accepting; the new workers take the queue
            else:
                # Closing a listener resets every connection still in its accept queue, whose clients have
                # already connected and sent a request: take them first, then close, with no await between.
                queued = self._take_accept_queue()
                self._close_listeners(sockets)
                for connection in queued:
                    await loop.connect_accepted_socket(self._protocol_factory, sock=connection)
            # uvicorn's shutdown closes every connection with no request in progress: one whose client is sending its
            # request right now would be reset. Wait (bounded) until each open connection has its request or is gone.
            deadline = loop.time() + ACCEPTED_GRACE_S
            while loop.time() < deadline and any(_awaiting_request(protocol) for protocol in self.server_state.connections):
                await asyncio.sleep(0.02)
        await super().shutdown(sockets)

    def _listeners_stay_open(self) -> bool:
        """A gunicorn reload: the master keeps the listener for the new workers, so nothing queued on it is lost."""
        return any(held_by_parent(listener) for server in self.servers for listener in server.sockets)

    def _protocol_factory(self) -> asyncio.Protocol:
        """What uvicorn's startup gives its listeners, for connections accepted here."""
        return self.config.http_protocol_class(  # type: ignore[call-arg]
            config=self.config, server_state=self.server_state, app_state=self.lifespan.state
        )

    def _take_accept_queue(self) -> list[socket.socket]:
        """Every connection the kernel has completed on this process's listeners, accepted without waiting,
        after a filter stops the kernel completing new ones (their clients are then refused at connect)."""
        taken = []
        for server in self.servers:
            for listener in server.sockets:
                for connection, _ in take_accept_queue(listener):
                    connection.setblocking(False)
                    taken.append(connection)
        return taken

    def _close_listeners(self, sockets: list[Any] | None) -> None:
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()


def _awaiting_request(protocol: Any) -> bool:
    """An open connection with no request in progress (uvicorn starts a cycle per request): its client may be sending one."""
    cycle = getattr(protocol, "cycle", None)
    return (cycle is None or cycle.response_complete) and not protocol.transport.is_closing()


class DrainingProcess(multiprocess.Process):
    """A worker process that runs a DrainingServer (the class is pickled into the worker, so the worker uses it)."""

    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            self._server = DrainingServer(config=self.config)
        return self._server


class DrainingSupervisor(multiprocess.Multiprocess):
    """uvicorn's supervisor, but it lets go of the shared listener before signalling its workers, so the
    last worker to close it is the one that takes its accept queue (see DrainingServer.shutdown)."""

    def terminate_all(self) -> None:
        for sock in self.sockets:
            sock.close()
        super().terminate_all()

    def handle_hup(self) -> None:
        """SIGHUP rescans the model repository in every worker (``ops/repository_sync.py``), without restarting them."""
        state_dir = os.environ.get(STATE_DIR_ENV)
        if state_dir:
            generation = request_rescan(Path(state_dir))
            logger.info("SIGHUP: every worker rescans the model repository (generation %d)", generation)
        else:
            super().handle_hup()


@contextmanager
def _draining_workers() -> Iterator[None]:
    original = multiprocess.Process
    multiprocess.Process = DrainingProcess  # type: ignore[misc]
    try:
        yield
    finally:
        multiprocess.Process = original  # type: ignore[misc]


def serve(config: uvicorn.Config) -> None:
    """Run uvicorn with draining servers, in this process or in ``config.workers`` worker processes."""
    if config.workers > 1:
        sock = config.bind_socket()
        with _draining_workers():
            DrainingSupervisor(config, sockets=[sock]).run()
        return
    server = DrainingServer(config)
    server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)
