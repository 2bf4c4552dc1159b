"""Small network and child-process helpers for the commands that start their own servers (benchmarks, `make bench`) and
for the tests' process fixtures: no Django, so anything may import it."""
from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable

import httpx

__all__ = ["child_pids", "connections_per_child", "free_port", "stop_process", "wait_answering"]


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


def child_pids(pid: int) -> list[int]:
    """The direct children of ``pid`` (a gunicorn master's workers); Linux /proc, [] if gone."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            return [int(child) for child in children.read().split()]
    except OSError:
        return []


def connections_per_child(*, parent_pid: int, port: int) -> dict[int, int]:
    """Established TCP connections to local ``port`` held by each child of ``parent_pid`` (which web
    worker holds how many kept-alive connections), from /proc/net/tcp and each child's fds."""
    inodes = set()
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[1].endswith(f":{port:04X}") and fields[3] == "01":  # local address, ESTABLISHED
                inodes.add(f"socket:[{fields[9]}]")
    counts = {}
    for child in child_pids(parent_pid):
        held = 0
        try:
            for fd in os.listdir(f"/proc/{child}/fd"):
                try:
                    held += os.readlink(f"/proc/{child}/fd/{fd}") in inodes
                except OSError:
                    pass  # closed meanwhile
        except OSError:
            continue  # the child exited
        counts[child] = held
    return counts
