"""Process lifecycle around the server: the metrics folder shared by workers, and draining on SIGTERM
(readiness, ``Connection: close``; ``server.py`` times the drain under `irisserve serve`).

Imports no prometheus_client: ``irisserve serve`` must set PROMETHEUS_MULTIPROC_DIR before any worker
imports it, because prometheus_client picks its storage at import time.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
DRAIN_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)

logger = logging.getLogger("irisserve")

_draining = threading.Event()


def is_draining() -> bool:
    """True once this process got SIGTERM/SIGINT: readiness probes answer 503, in-flight requests still finish."""
    return _draining.is_set()


def begin_draining() -> None:
    _draining.set()


def end_draining() -> None:
    """Forget a drain (for tests that simulate one in-process)."""
    _draining.clear()


@contextmanager
def multiprocess_metrics_dir(workers: int) -> Iterator[Path | None]:
    """With several workers, point prometheus_client at one empty folder all of them write to.

    A folder already named by PROMETHEUS_MULTIPROC_DIR is emptied (old workers' files would add to the
    counts); otherwise a fresh one is made and removed on exit. One worker keeps the default registry."""
    if workers <= 1:
        yield None
        return
    preset = os.environ.get(MULTIPROC_ENV)
    folder = Path(preset) if preset else Path(tempfile.mkdtemp(prefix="irisserve-metrics-"))
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROC_ENV] = str(folder)
    try:
        yield folder
    finally:
        if not preset:
            del os.environ[MULTIPROC_ENV]
            shutil.rmtree(folder, ignore_errors=True)


def drain_on_signals() -> Callable[[], None]:
    """Chain a handler in front of the server's SIGTERM/SIGINT handler that marks the process draining.

    uvicorn stops accepting and waits for in-flight requests after it sees the signal; marking the drain
    first makes readiness false before that wait. Returns a function that puts the previous handlers back.
    Signals can only be handled on the main thread, so elsewhere (test clients) this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.getsignal(sig) for sig in DRAIN_SIGNALS}

    def handler(sig: int, frame: FrameType | None) -> None:
        if not is_draining():
            logger.warning("%s received: readiness is now false; finishing in-flight requests", signal.Signals(sig).name)
        begin_draining()
        _call_previous(previous[signal.Signals(sig)], sig, frame)

    for sig in DRAIN_SIGNALS:
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, old in previous.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, old)

    return restore


def _call_previous(old: object, sig: int, frame: FrameType | None) -> None:
    if callable(old):
        old(sig, frame)
    elif old == signal.SIG_DFL:
        signal.signal(sig, signal.SIG_DFL)
        signal.raise_signal(sig)


def exit_cleanly_on_signals() -> None:
    """Make SIGTERM/SIGINT outside uvicorn's own handling end the process with status 0.

    After its graceful shutdown uvicorn puts back the handler it found and raises the caught signal
    again; with the default handler the process would die by it (status -15, which Cloud Run and
    supervisors read as a crash) even though every request finished."""
    for sig in DRAIN_SIGNALS:
        signal.signal(sig, _exit_zero)


def _exit_zero(sig: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


CONNECTION_CLOSE = (b"connection", b"close")


class DrainMiddleware:
    """While draining, every answer carries ``Connection: close``, so keep-alive clients reconnect (to
    another instance, behind a load balancer) instead of sending their next request on a connection
    that is about to close."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _draining.is_set():
            await self.app(scope, receive, send)
            return

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), CONNECTION_CLOSE]
            await send(message)

        await self.app(scope, receive, send_closing)
