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
import time
from collections.abc import Iterator
from typing import Any

logger = logging.getLogger("irisserve")

SO_ATTACH_FILTER = 26  # Linux
# A classic BPF program, run on each segment at the TCP header: a segment with the ACK flag (byte 13, 0x10) passes, so
# the handshakes already under way complete; anything else (a new connection's SYN) is dropped.
_DROP_NEW_CONNECTIONS = ctypes.create_string_buffer(
    struct.pack("HBBI", 0x30, 0, 0, 13)  # BPF_LD | BPF_B | BPF_ABS: A = the TCP flags byte
    + struct.pack("HBBI", 0x45, 1, 0, 0x10)  # BPF_JMP | BPF_JSET | BPF_K: ACK set? pass : drop
    + struct.pack("HBBI", 0x06, 0, 0, 0)  # BPF_RET | BPF_K: drop
    + struct.pack("HBBI", 0x06, 0, 0, 0xFFFFFFFF)  # BPF_RET | BPF_K: pass
)
# After the filter, how long the handshakes already under way get to complete (a round trip; loopback: microseconds).
HANDSHAKE_S = 0.02


def take_accept_queue(listener: Any) -> Iterator[tuple[socket.socket, Any]]:
    """Every connection the kernel has completed on ``listener`` (anything with ``fileno()``), accepted
    without waiting, after a filter stops it completing new ones."""
    with socket.socket(fileno=os.dup(listener.fileno())) as handle:
        program = struct.pack("HL", 4, ctypes.addressof(_DROP_NEW_CONNECTIONS))  # struct sock_fprog {len, filter*}
        try:
            handle.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, program)
            time.sleep(HANDSHAKE_S)
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


def held_by_parent(listener: Any) -> bool:
    """Whether this process's parent holds the same listening socket (Linux /proc): gunicorn's master during a reload
    (SIGHUP), whose new workers go on accepting from it. Then a leaving worker must neither filter the socket (the
    filter is the socket's, not the process's: the new workers would accept nothing) nor take its queue."""
    target = f"socket:[{os.fstat(listener.fileno()).st_ino}]"
    folder = f"/proc/{os.getppid()}/fd"
    try:
        return any(os.readlink(f"{folder}/{fd}") == target for fd in os.listdir(folder))
    except OSError:
        return False
