"""Small network helpers for the commands that start their own servers (benchmarks, `make bench`) and
for the tests' process fixtures: no Django, so anything may import it."""
from __future__ import annotations

import socket

__all__ = ["free_port"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago (the OS picks it; the caller's
    server binds it next, so another process could in theory take it in between)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
