"""Real processes of one deployment for the scale-out tests: web servers and qclusters started the
way `make run` starts them (devtools/runner.py), each on its own free port, all sharing one
database (direct or through PgBouncer) and, optionally, one Redis."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from devtools.runner import web_command
from tests.fixtures.processes import ROOT, free_port, wait_for


class Stack:
    def __init__(self, *, env: dict[str, str], logdir: Path) -> None:
        self.env = env
        self.logdir = logdir
        self.processes: list[tuple[str, subprocess.Popen, object]] = []
        self.web_urls: list[str] = []

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = open(self.logdir / f"{name}.log", "wb")  # noqa: SIM115 - closed by stop(), after its process
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.processes.append((name, proc, log))
        return proc

    def start_web(self, name: str) -> str:
        port = free_port()
        metrics = self.logdir / f"{name}-metrics"
        metrics.mkdir(exist_ok=True)
        env = dict(self.env, PROMETHEUS_MULTIPROC_DIR=str(metrics))
        self._spawn(name, web_command(port=port), env)  # exactly the web server of `make run`
        url = f"http://127.0.0.1:{port}"
        self.web_urls.append(url)
        return url

    def start_qcluster(self, name: str) -> subprocess.Popen:
        metrics = self.logdir / f"{name}-metrics"
        metrics.mkdir(exist_ok=True)
        return self._spawn(name, [sys.executable, "manage.py", "qcluster"],
                           dict(self.env, PROMETHEUS_MULTIPROC_DIR=str(metrics)))

    def wait_web(self, *, timeout: float = 60.0) -> None:
        for url in self.web_urls:
            def up(url: str = url) -> bool:
                self.check_alive()
                try:
                    return httpx.get(f"{url}/healthz", timeout=2.0).status_code == 200
                except httpx.HTTPError:
                    return False
            wait_for(up, timeout=timeout, interval=0.2, message=f"{url}/healthz")

    def check_alive(self) -> None:
        for name, proc, _ in self.processes:
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}")

    def log_tail(self, name: str, chars: int = 3000) -> str:
        return (self.logdir / f"{name}.log").read_text(errors="replace")[-chars:]

    def manage(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, timeout=timeout,
                              capture_output=True, text=True, check=False)

    def stop(self) -> None:
        """SIGKILL every process group: the tests prove nothing about shutdown, and a qcluster's
        orderly stop takes seconds."""
        for _, proc, _ in self.processes:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        for _, proc, log in self.processes:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
            log.close()
