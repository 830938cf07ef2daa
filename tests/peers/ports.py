"""Free TCP ports on 127.0.0.1 for the servers tests start."""

from __future__ import annotations

import random
import socket


def free_port() -> int:
    """A port free now, below Linux's ephemeral range (32768-60999): the servers a test
    starts afterwards bind port 0 and open connections there, so they cannot take it."""
    for _ in range(200):
        port = random.randrange(20_000, 32_000)  # noqa: S311 - a port, not a secret
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port between 20000 and 32000")
