"""One handler per route: routes declared once on FastAPI, the hot ones implemented as plain ASGI.

FastAPI documents every route from its declaration (``/docs``, ``/openapi.json``). A hot route's declared
endpoint is only its documentation: ``@served_by(handler)`` gives the route a plain-ASGI handler, which
``ServedRoute`` runs instead of FastAPI's request machinery (a Request object, dependency solving, response
re-validation cost more than the model). ``HotRoutes`` finds those routes by their route path (the root path
removed, so a prefix costs nothing) before FastAPI's router walks its list, and calls the same route objects.

Each route class names the protocol its errors are answered in (``ops/asgi.error_reply``): the seed API's
``{"detail"}`` or the Open Inference Protocol's ``{"error"}``. Every GET route answers HEAD too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from irisserve.ops.asgi import Protocol, route_path

Handler = Callable[[Scope, Receive, Send], Awaitable[None]]
Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])

SERVED_BY = "__irisserve_handler__"


def served_by(handler: Handler) -> Callable[[Endpoint], Endpoint]:
    """Declare that ``handler`` (plain ASGI) answers the decorated endpoint's route; FastAPI documents the
    endpoint's signature and docstring, and never calls it."""

    def mark(endpoint: Endpoint) -> Endpoint:
        setattr(endpoint, SERVED_BY, handler)
        return endpoint

    return mark


class ServedRoute(APIRoute):
    """A FastAPI route that answers HEAD wherever it answers GET, names its errors' protocol, and runs its
    ``served_by`` handler, if it has one, as its whole implementation."""

    protocol: Protocol = "seed"

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        self.handler: Handler | None = getattr(endpoint, SERVED_BY, None)
        declared = set(self.methods or ())
        self.answers_head = "GET" in declared
        self.answered = declared | ({"HEAD"} if self.answers_head else set())

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if self.answers_head and scope["type"] == "http" and scope["method"] == "HEAD":
            return super().matches({**scope, "method": "GET"})
        return super().matches(scope)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.handler is not None and scope["method"] in self.answered:
            await self.handler(scope, receive, send)
        elif self.answers_head and scope["method"] == "HEAD":
            # FastAPI's handler runs as for GET; uvicorn sends no body for the HEAD request it is answering.
            await super().handle({**scope, "method": "GET"}, receive, send)
        else:
            await super().handle(scope, receive, send)


class V2Route(ServedRoute):
    """A route of the Open Inference Protocol: every error answered as ``{"error": "..."}``."""

    protocol: Protocol = "v2"


class HotRoutes:
    """Dispatches requests for the routes with a plain-ASGI handler straight to them, by route path: one
    dictionary look-up for a fixed path, a few regular expressions for the rest; anything else goes on to
    FastAPI. Sets ``scope["route"]`` as FastAPI's router would, for the error shape, metrics and logs."""

    def __init__(self, app: ASGIApp, *, routes: list[BaseRoute]) -> None:
        self.app = app
        served = [route for route in routes if isinstance(route, ServedRoute) and route.handler is not None]
        self.fixed: dict[tuple[str, str], ServedRoute] = {}
        self.templated: list[ServedRoute] = []
        for route in served:
            if route.param_convertors:
                self.templated.append(route)
                continue
            for method in route.answered:
                self.fixed[(method, route.path)] = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = route_path(scope)
            route = self.fixed.get((scope["method"], path))
            if route is not None:
                scope["route"] = route
                scope["path_params"] = {}
                await route.handle(scope, receive, send)
                return
            for route in self.templated:
                if not route.path_regex.match(path):  # the cheap test first: FastAPI's matches costs ~4 µs a route
                    continue
                match, child_scope = route.matches(scope)
                if match is Match.FULL:
                    scope.update(child_scope)
                    await route.handle(scope, receive, send)
                    return
        await self.app(scope, receive, send)
