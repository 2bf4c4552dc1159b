"""Fixtures of the client tests.

``tokenpool_server``: a real TokenPool web process (``manage.py runserver``, a subprocess on a free
port) serving this test's database and talking to the emulator, so a test can *stop* TokenPool
and watch the client fall back. ``emulator_pool``: a pool filled with pairs the emulator made, so
TOME can resolve them once TokenPool is gone. ``wheel_python``: the python of a fresh virtualenv
holding only the freshly built ``tokenpool-tome-client`` wheel and its dependencies.
"""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.processes import ROOT, ServerProcess
from tokenpool_tome import HttpTokenizationLibrary, TomeClientConfig

ALL_SCOPES = ["reserve", "lookup", "detokenize", "pools:read", "lookup:any", "detokenize:any", "lookup:tome",
              "detokenize:tome"]


class TokenPoolProcess(ServerProcess):
    name = "TokenPool"

    def __init__(self, *, env: dict[str, str], log_path: Path) -> None:
        super().__init__(log_path=log_path)
        self.env = env

    def start(self, *, timeout: float = 180.0) -> None:
        # Seconds when idle; generous because the whole suite on a loaded 2-core machine runs ~15x slower.
        command = [sys.executable, "manage.py", "runserver", f"127.0.0.1:{self.port}", "--noreload",
                   "--skip-checks"]
        self.launch(command, env=self.env, ready=self.healthy, timeout=timeout)


@pytest.fixture
def tokenpool_server(transactional_db: None, tome: Any, settings: Any,
                     tmp_path: Path) -> Iterator[TokenPoolProcess]:
    """TokenPool as its own process on this test's (committed, hence transactional) database."""
    from django.db import connection

    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("DATABASE_URL", "REDIS_URL", "TOME_", "DJANGO_SETTINGS"))}
    env.update(EMBEDDED_DATABASE_NAME=connection.settings_dict["NAME"], SECRET_KEY=settings.SECRET_KEY,
               TOME_BASE_URL=tome.base_url, TOME_API_TOKEN=tome.client_token,
               TOME_NS1=tome.ns1, TOME_NS2=tome.ns2, PYTHONUNBUFFERED="1")
    server = TokenPoolProcess(env=env, log_path=tmp_path / "tokenpool.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()  # before transactional_db flushes the tables it has connections on


@pytest.fixture
def tome_library(tome: Any) -> Iterator[HttpTokenizationLibrary]:
    library = HttpTokenizationLibrary(TomeClientConfig(base_url=tome.base_url, api_token=tome.client_token,
                                                       ns1=tome.ns1, ns2=tome.ns2, read_timeout=30.0))
    yield library
    library.close()


@pytest.fixture
def emulator_pool(transactional_db: None, tome_library: HttpTokenizationLibrary) -> dict[str, Any]:
    """A refill-disabled pool of 30 pairs made by the emulator (NS1 generate + NS2 tokenize), and an
    API key holding every scope."""
    from keys.models import ApiKey
    from pool.models import Pool
    from pool.services import pairs_insert_bulk

    pool = Pool.objects.create(name=f"client-{secrets.token_hex(3)}", refill_enabled=False)
    pairs_insert_bulk(pool=pool, pairs=tome_library.generate_pairs(30))
    _, raw_key = ApiKey.objects.create_key(name=f"client-{secrets.token_hex(3)}", scopes=ALL_SCOPES)
    return {"pool": pool, "key": raw_key}


def run(command: list[str], *, cwd: Path, timeout: float = 300.0, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    assert done.returncode == 0, f"{command[:4]} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="session")
def wheel_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    # Isolated build, as `make wheel` does (pip fetches the pinned hatchling from the package index).
    run([sys.executable, "-m", "build", "--wheel", "--outdir", str(work / "dist"), str(ROOT)], cwd=work)
    [wheel] = (work / "dist").glob("tokenpool_tome_client-*.whl")
    venv.create(work / "venv", with_pip=False)  # the project's pip installs into it (--python)
    python = work / "venv" / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         "--disable-pip-version-check", str(wheel)], cwd=work)
    return python
