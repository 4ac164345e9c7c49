"""gunicorn as functions-framework runs the function, with uvicorn workers that are `irisserve serve`'s server: the
drain on SIGTERM that loses no request, bounded headers with a deadline, the graceful timeout, and irisserve's
log format for every line.

``cloud_function/main.py``'s function is an ``@functions_framework.aio.http`` function, so functions-framework
serves it as ASGI: gunicorn with ``uvicorn_worker.UvicornWorker``, built by its ``UvicornApplication`` with only
bind, workers, worker class, loglevel and timeout (gunicorn's BaseApplication ignores GUNICORN_CMD_ARGS).
``main.py`` calls ``install()``, which puts ``TunedApplication`` in its place: the same application with the
options below, among them ``DrainingUvicornWorker``, whose server is ``irisserve.ops.server.DrainingServer``
speaking ``BoundedHttpToolsProtocol``. functions-framework and gunicorn are pinned (pyproject's ``function``
extra, requirements-function.txt) because this replaces a private class; a test checks the tuning is in effect,
and a worker that starts without it logs an ERROR line.

Under the threaded (Flask) mode it replaces, 8 slow clients could hold every thread of a 2-CPU instance; an
event loop holds a slow client for the price of a socket, each one cut at the read deadline.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from functions_framework import _enable_execution_id_logging
from functions_framework._http import gunicorn as framework_gunicorn
from gunicorn.arbiter import Arbiter  # type: ignore[import-untyped]
from gunicorn.glogging import Logger  # type: ignore[import-untyped]
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn_worker import UvicornWorker  # type: ignore[import-untyped]

from irisserve.core.settings import Settings, get_settings
from irisserve.ops.request_log import CloudLoggingFormatter, configure_logging, use_json_logs
from irisserve.ops.server import BoundedHttpToolsProtocol, DrainingServer

logger = logging.getLogger("irisserve")
F = TypeVar("F", bound=Callable[..., Any])

# Idle keep-alive connections are kept this long: uvicorn's default, so both front doors agree.
KEEPALIVE_S = 5
# gunicorn's graceful_timeout, the master's deadline before SIGKILL counted from SIGTERM, is the drain, the
# finish time and this margin: 9 s with the defaults, inside Cloud Run's 10 s (gunicorn's 30 s outlived it).
MASTER_MARGIN_S = 1

# Set in gunicorn's master when it builds a DrainingUvicornWorker, before it forks the worker process.
_tuned_worker = False
UNTUNED = (
    "functions-framework started gunicorn without irisserve's tuning (functions-framework %s, gunicorn %s): no drain "
    "on SIGTERM, no header limit or deadline. It replaces functions-framework's private UvicornApplication; pin "
    "functions-framework==3.10.2 and gunicorn==27.0.1 (requirements-function.txt) or update irisserve.function.server."
)


def install(settings: Settings | None = None) -> None:
    """Log in irisserve's format and have functions-framework run gunicorn as ``TunedApplication``.

    main.py calls this at import, in gunicorn's master before any worker forks and before import mode
    loads the model (so that line is logged too)."""
    configure_logging(settings or get_settings())
    framework_gunicorn.UvicornApplication = TunedApplication  # type: ignore[misc]  # replacing its class is the point
    os.register_at_fork(after_in_child=_check_tuned)


def _check_tuned() -> None:
    """In a forked worker: say loudly if functions-framework bypassed ``TunedApplication`` (an upgrade that
    renamed or stopped using its UvicornApplication would do it silently)."""
    if _tuned_worker:
        logger.info("gunicorn tuned by irisserve: %s", DrainingUvicornWorker.__name__)
        return
    from importlib.metadata import version

    logger.error(UNTUNED, version("functions-framework"), version("gunicorn"))


def gunicorn_options(settings: Settings) -> dict[str, Any]:
    """irisserve's gunicorn options; bind, workers (WORKERS), loglevel and timeout stay functions-framework's."""
    return {
        "keepalive": KEEPALIVE_S,
        "graceful_timeout": math.ceil(settings.drain_seconds) + settings.finish_seconds + MASTER_MARGIN_S,
        "worker_class": DrainingUvicornWorker,
        "logger_class": IrisServeLogger,
    }


class TunedApplication(framework_gunicorn.UvicornApplication):
    """functions-framework's gunicorn application for ASGI functions with ``gunicorn_options`` on top of its own."""

    def __init__(self, app: Any, host: str, port: int, debug: bool, **options: Any) -> None:
        super().__init__(direct_requests(app), host, port, debug, **{**options, **gunicorn_options(get_settings())})


# functions-framework's routes around an HTTP function: these answer 404 themselves (GET, HEAD); the function gets
# every other path with these methods (Starlette answers any other method 405).
FRAMEWORK_PATHS = frozenset({"/robots.txt", "/favicon.ico"})
FUNCTION_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})


def answered_by(app: ASGIApp) -> Callable[[F], F]:
    """Mark an ``@functions_framework.aio.http`` function that returns ``app`` for every request (applied under that
    decorator, whose ``functools.wraps`` carries the mark onto the endpoint functions-framework routes to)."""

    def mark(function: F) -> F:
        function.asgi_app = app  # type: ignore[attr-defined]
        return function

    return mark


class DirectRequests:
    """functions-framework's ASGI app, with the requests its routes would pass to a function marked ``answered_by``
    handed to that function's app directly: the same answers, without a Starlette app, two middlewares, a
    ``Request`` and an execution id built for each request (a third of the function's CPU per prediction)."""

    def __init__(self, framework_app: ASGIApp, function_app: ASGIApp) -> None:
        self.framework_app = framework_app
        self.function_app = function_app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] in FUNCTION_METHODS
            and not (scope["path"] in FRAMEWORK_PATHS and scope["method"] in ("GET", "HEAD"))
        ):
            await self.function_app(scope, receive, send)
        else:
            await self.framework_app(scope, receive, send)


def direct_requests(framework_app: Any) -> Any:
    """``DirectRequests`` when the framework's target is marked ``answered_by``; else the framework's app, as is. Also
    as is with LOG_EXECUTION_ID on: then functions-framework's wrapper tags each request's output with its id."""
    if _enable_execution_id_logging():
        return framework_app
    for route in getattr(framework_app, "routes", ()):
        if getattr(route, "path", None) == "/":
            function_app = getattr(route.endpoint, "asgi_app", None)
            return framework_app if function_app is None else DirectRequests(framework_app, function_app)
    return framework_app


class DrainingUvicornWorker(UvicornWorker):  # type: ignore[misc]
    """uvicorn_worker's gunicorn worker, running `irisserve serve`'s server (``irisserve.ops.server``): the drain
    on SIGTERM, the 431 and the head deadline, the finish time for requests in flight; no access log (the app
    writes one line per request)."""

    CONFIG_KWARGS = {"loop": "auto", "http": BoundedHttpToolsProtocol, "access_log": False, "ws": "none"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        global _tuned_worker
        _tuned_worker = True
        super().__init__(*args, **kwargs)
        self.config.timeout_graceful_shutdown = get_settings().finish_seconds

    async def _serve(self) -> None:
        self.config.app = self.wsgi  # gunicorn's name for the application it loaded: here functions-framework's ASGI app
        server = DrainingServer(config=self.config)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)


class IrisServeLogger(Logger):  # type: ignore[misc]
    """gunicorn's logger (uvicorn's lines go through it too, in the workers), in irisserve's format: JSON when on."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        if use_json_logs(get_settings().log_format, sys.stderr):
            for handler in self.error_log.handlers:
                handler.setFormatter(CloudLoggingFormatter())
