"""CORS response headers from the ``cors_origins`` setting, for any front door (no web framework needed)."""

from __future__ import annotations

from collections.abc import Sequence

ANY_ORIGIN = "*"
ALLOWED_METHODS = "GET, HEAD, POST, OPTIONS"
ALLOWED_HEADERS = "Authorization, Content-Type, X-API-Key"
# Browsers cap this anyway (Chromium at 2 hours); 10 minutes keeps a changed setting from lingering long.
MAX_AGE_SECONDS = 600


def cors_headers(origin: str | None, allowed: Sequence[str], *, preflight: bool = False) -> dict[str, str]:
    """The Access-Control-* headers for a request from ``origin``; empty when the origin is not allowed.

    An allowed origin is echoed (with ``Vary: Origin``, so caches keep one answer per origin) unless the
    setting is ``["*"]``; a preflight answer also names the methods, headers and how long to cache it."""
    if not origin or not allowed:
        return {}
    if ANY_ORIGIN in allowed:
        headers = {"Access-Control-Allow-Origin": ANY_ORIGIN}
    elif origin in allowed:
        headers = {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
    else:
        return {}
    if preflight:
        headers |= {
            "Access-Control-Allow-Methods": ALLOWED_METHODS,
            "Access-Control-Allow-Headers": ALLOWED_HEADERS,
            "Access-Control-Max-Age": str(MAX_AGE_SECONDS),
        }
    return headers
