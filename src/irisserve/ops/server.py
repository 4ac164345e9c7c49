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
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.supervisors import multiprocess

from irisserve.core.errors import encode_json
from irisserve.core.settings import get_settings
from irisserve.ops.lifecycle import begin_draining
from irisserve.ops.listener import take_accept_queue

logger = logging.getLogger("irisserve")

# After the listener closes: how long connections it already accepted may take to send their request.
ACCEPTED_GRACE_S = 0.5
# After a 431: how much of what the client still sends is read and dropped, and for how long, before closing.
LINGER_BYTES = 1 << 20
LINGER_S = 1.0
# uvicorn's exit code when the app cannot start (its STARTUP_FAILURE).
STARTUP_FAILURE = 3


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bound on the request line and headers: past
    ``IRISSERVE_MAX_HEADER_BYTES`` the client gets 431 and the connection closes, before the bytes pile up
    (httptools itself buffers a header of any size: a 50 MB header used to reach the app)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_limit = get_settings().max_header_bytes
        self._header_bytes = 0
        self._in_headers = True
        self._tail = b""
        self._refused_at: float | None = None
        self._lingered = 0

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self._header_bytes = 0
        self._tail = b""

    def on_headers_complete(self) -> None:
        self._in_headers = False
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        if self._refused_at is not None:
            self._linger(len(data))
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
        # Read and drop what the client is still sending before closing (a close with unread data resets the
        # connection, and the client could lose its 431): at most LINGER_BYTES, for at most LINGER_S.
        self._refused_at = time.monotonic()
        self._lingered = 0
        asyncio.get_running_loop().call_later(LINGER_S, self.transport.close)

    def _linger(self, size: int) -> None:
        self._lingered += size
        if self._lingered > LINGER_BYTES or time.monotonic() - (self._refused_at or 0.0) > LINGER_S:
            self.transport.close()


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
        logger.warning("Signal %d: draining for %.1f s (readiness 503, answers close their connection)", sig, self.drain_seconds)

    async def on_tick(self, counter: int) -> bool:
        if self._drain_ends is not None and time.monotonic() >= self._drain_ends:
            self.should_exit = True
        return await super().on_tick(counter)

    async def shutdown(self, sockets: list[Any] | None = None) -> None:
        if self._drain_ends is not None:
            # Closing a listener resets every connection still in its accept queue, whose clients have
            # already connected and sent a request: take them first, then close, with no await between.
            queued = self._take_accept_queue()
            self._close_listeners(sockets)
            loop = asyncio.get_running_loop()
            for connection in queued:
                await loop.connect_accepted_socket(self._protocol_factory, sock=connection)
            await asyncio.sleep(ACCEPTED_GRACE_S)
        await super().shutdown(sockets)

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
