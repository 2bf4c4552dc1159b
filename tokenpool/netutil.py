"""Small network and child-process helpers for the commands that start their own servers (benchmarks, `make bench`) and
for the tests' process fixtures: no Django, so anything may import it."""
from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable

__all__ = ["free_port", "stop_process", "wait_answering"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago (the OS picks it; the caller's
    server binds it next, so another process could in theory take it in between)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_answering(url: str, *, process: subprocess.Popen, ok: Callable[[int], bool] = lambda status: True,
                   timeout: float = 60.0) -> bool:
    """Poll ``url`` until an answer whose status ``ok`` accepts; False if ``process`` exited or the
    time ran out first."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if ok(httpx.get(url, timeout=1).status_code):
                return True
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.2)


def stop_process(process: subprocess.Popen, *, timeout: float = 20.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
