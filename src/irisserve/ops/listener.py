"""Closing a listening socket without resetting the connections in its accept queue (both front doors).

When a listening socket closes, the kernel resets every connection it has completed but nobody has
accepted yet, and those clients have already sent their request. So a draining server first makes the
kernel drop new SYNs (a one-instruction BPF filter: their clients are then refused at connect, which they
can retry elsewhere), then accepts what is queued, serves it, and only then closes. Standard library only.
"""

from __future__ import annotations

import ctypes
import logging
import os
import socket
import struct
from collections.abc import Iterator
from typing import Any

logger = logging.getLogger("irisserve")

SO_ATTACH_FILTER = 26  # Linux
# A classic BPF program of one instruction, "return 0": the socket accepts no packet.
_DROP_ALL = ctypes.create_string_buffer(struct.pack("HBBI", 0x06, 0, 0, 0))  # BPF_RET | BPF_K, k = 0


def take_accept_queue(listener: Any) -> Iterator[tuple[socket.socket, Any]]:
    """Every connection the kernel has completed on ``listener`` (anything with ``fileno()``), accepted
    without waiting, after a filter stops it completing new ones."""
    with socket.socket(fileno=os.dup(listener.fileno())) as handle:
        program = struct.pack("HL", 1, ctypes.addressof(_DROP_ALL))  # struct sock_fprog {len, filter*}
        try:
            handle.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, program)
        except OSError:  # not Linux, or not allowed: the gap it closes is only microseconds wide
            logger.debug("Cannot filter the listener; taking its queue without")
        handle.setblocking(False)
        while True:
            try:
                yield handle.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
