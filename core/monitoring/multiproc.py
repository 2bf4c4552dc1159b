"""Where every process of the deployment writes its Prometheus counters (multiprocess mode).

Imported by ``tokenpool/settings.py`` before anything imports ``prometheus_client``: the library
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


def multiproc_dir_configure(*, default: Path) -> str:
    """Return the directory for per-process metric files, create it and export it to children.

    An explicit ``PROMETHEUS_MULTIPROC_DIR`` wins (``make run`` sets and wipes ``var/prometheus``).
    Under pytest (which sets ``PYTEST_VERSION``) each run gets a private temporary directory, so a
    test run neither reads nor pollutes the counters of a server running from the same checkout;
    subprocesses started by the tests inherit it through the environment and are summed with it.
    """
    path = os.environ.get(ENV) or os.environ.get(ENV.lower())
    if not path:
        if "PYTEST_VERSION" in os.environ:
            path = tempfile.mkdtemp(prefix="tokenpool-metrics-")
            atexit.register(shutil.rmtree, path, True)
        else:
            path = str(default)
    Path(path).mkdir(parents=True, exist_ok=True)
    os.environ[ENV] = path
    return path
