"""Trace context (W3C traceparent, Google's X-Cloud-Trace-Context) and the request id, read from raw headers."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import NamedTuple

MAX_REQUEST_ID_CHARS = 128
# Header values copied into the request log are cut here: a 1 MB User-Agent must not make a 1 MB log line.
MAX_LOGGED_HEADER_CHARS = 512

class Trace(NamedTuple):
    trace_id: str
    span_id: str | None
    sampled: bool


_HEX_DIGITS = "0123456789abcdefABCDEF"


def _is_hex(text: str, length: int) -> bool:
    return len(text) == length and not text.strip(_HEX_DIGITS)


def parse_traceparent(value: str) -> Trace | None:
    """W3C ``traceparent``: ``00-<32 hex trace id>-<16 hex span id>-<2 hex flags>``."""
    parts = value.strip().split("-")
    if len(parts) != 4 or not _is_hex(parts[1], 32) or not _is_hex(parts[2], 16) or not _is_hex(parts[3], 2):
        return None
    if parts[1] == "0" * 32:
        return None
    return Trace(parts[1].lower(), parts[2].lower(), bool(int(parts[3], 16) & 1))


def parse_cloud_trace_context(value: str) -> Trace | None:
    """Google's ``X-Cloud-Trace-Context``: ``<32 hex trace id>/<decimal span id>;o=<0|1>``."""
    head, _, options = value.strip().partition(";")
    trace_id, _, span = head.partition("/")
    if not _is_hex(trace_id, 32):
        return None
    return Trace(trace_id.lower(), span if span.isdigit() else None, options.strip() == "o=1")


def _valid_request_id(value: str) -> bool:
    return 0 < len(value) <= MAX_REQUEST_ID_CHARS and value.isprintable() and value.isascii() and " " not in value


class RequestHeaders(NamedTuple):
    request_id: str
    trace: Trace | None
    user_agent: str | None
    content_length: str | None


def read_headers(raw: Sequence[tuple[bytes, bytes]]) -> RequestHeaders:
    """One pass over the raw headers for the few this module reads."""
    request_id = user_agent = content_length = traceparent = cloud_trace = None
    for name, value in raw:
        if name == b"x-request-id":
            request_id = value.decode("latin-1")
        elif name == b"user-agent":
            user_agent = value[:MAX_LOGGED_HEADER_CHARS].decode("latin-1")
        elif name == b"content-length":
            content_length = value[:MAX_LOGGED_HEADER_CHARS].decode("latin-1")
        elif name == b"traceparent":
            traceparent = value.decode("latin-1")
        elif name == b"x-cloud-trace-context":
            cloud_trace = value.decode("latin-1")
    trace = parse_traceparent(traceparent) if traceparent else None
    if trace is None and cloud_trace:
        trace = parse_cloud_trace_context(cloud_trace)
    if request_id is None or not _valid_request_id(request_id):
        request_id = os.urandom(16).hex()  # uuid4() costs five times as much
    return RequestHeaders(request_id, trace, user_agent, content_length)


