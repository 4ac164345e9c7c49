"""The packaging tools' error, and the helpers that keep its messages on one line."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from irisserve.core.errors import IrisServeError

LISTED_NAMES = 8
MESSAGE_PART = 200


class PackagingError(IrisServeError):
    """The model or its data cannot be packaged; the one-line message says what to change. Nothing was written."""


def listed(names: Sequence[Any]) -> str:
    """'a', 'b', 'c' — at most LISTED_NAMES of them, then how many more."""
    shown = ", ".join(repr(str(name)) for name in list(names)[:LISTED_NAMES])
    more = len(names) - LISTED_NAMES
    return f"{shown} and {more} more" if more > 0 else shown


def one_line(exc: BaseException) -> str:
    """An exception's text on one line, cut to MESSAGE_PART characters (library errors can print whole graphs)."""
    text = " ".join(str(exc).split())
    return text if len(text) <= MESSAGE_PART else text[: MESSAGE_PART - 3] + "..."


def root_cause(exc: BaseException) -> str:
    """The innermost exception's type and first line: skl2onnx wraps the useful error in one that prints the whole node."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {one_line(Exception(lines[0] if lines else ''))}"
