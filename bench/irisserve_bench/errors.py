"""The benchmark's one error type, and the table that turns a failed request into a one-line message."""

from __future__ import annotations

import httpx

BODY_PREVIEW_CHARS = 200


class BenchError(Exception):
    """A benchmark that cannot go on; the message says what failed and what to check, for a one-line exit."""


# httpx exception → what it means for the person running the benchmark (first match wins: subclasses first).
_TRANSPORT_MESSAGES: tuple[tuple[type[Exception], str], ...] = (
    (httpx.ConnectTimeout, "no connection within {timeout:g} s (is the host reachable?)"),
    (httpx.TimeoutException, "no answer within {timeout:g} s (raise --timeout, or check that the service is not stuck)"),
    (httpx.ConnectError, "cannot connect ({detail}); check the URL and that the service is running"),
    (httpx.RemoteProtocolError, "the server broke the HTTP exchange ({detail})"),
    (httpx.UnsupportedProtocol, "unsupported URL ({detail}); use http:// or https://"),
    (httpx.HTTPError, "request failed ({detail})"),
)


def transport_error(method: str, url: str, exc: Exception, *, timeout: float) -> BenchError:
    """A BenchError naming the request and the reason, for an exception raised before any answer came."""
    for kind, template in _TRANSPORT_MESSAGES:
        if isinstance(exc, kind):
            reason = template.format(timeout=timeout, detail=str(exc) or type(exc).__name__)
            return BenchError(f"{method} {url}: {reason}.")
    return BenchError(f"{method} {url}: {type(exc).__name__}: {exc}.")


def answer_error(method: str, url: str, status: int, body: bytes | str, *, reason: str = "") -> BenchError:
    """A BenchError for an answer that came but is unusable: an error status, or a body that is not JSON."""
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    preview = " ".join(text.split())[:BODY_PREVIEW_CHARS] or "(empty body)"
    what = reason or f"answered HTTP {status}"
    return BenchError(f"{method} {url}: {what}: {preview}")
