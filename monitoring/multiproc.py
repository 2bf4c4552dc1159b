"""Where every process of the deployment writes its Prometheus counters (multiprocess mode).

Called by the settings (``tokenpool/settings/``) before anything imports ``prometheus_client``: the library
picks its value class (per-process mmap files vs. in-memory floats) from ``PROMETHEUS_MULTIPROC_DIR``
at import time, so the variable must be in ``os.environ`` first. No Django import here.
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiproc_dir_configure(*, configured: str, default: Path | None) -> str:
    """Return the directory for per-process metric files, create it and export it to children.

    ``configured`` (the settings' ``PROMETHEUS_MULTIPROC_DIR``) wins: ``make run`` sets and wipes
    ``var/prometheus``. Without it, ``default``; ``default=None`` (the test settings) makes a private
    temporary directory per run, so a test run neither reads nor pollutes the counters of a server
    running from the same checkout; subprocesses started by the tests inherit it through the
    environment and are summed with it.
    """
    path = configured
    if not path:
        if default is None:
            path = tempfile.mkdtemp(prefix="tokenpool-metrics-")
            atexit.register(shutil.rmtree, path, True)
        else:
            path = str(default)
    Path(path).mkdir(parents=True, exist_ok=True)
    os.environ[ENV] = path  # written, not read: prometheus_client and child processes read it
    return path
