"""The examples of docs/client-library.md run as written: the pool example against a real TokenPool
process and the emulator (then again with that TokenPool stopped, to see the fallback), the
library example against the emulator. Only the environment variables the examples read differ from
`make run` (ports, the emulator fixture's token)."""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.client.conftest import run
from tests.fixtures.tome import ROOT

DOC = ROOT / "docs" / "client-library.md"


def example(marker: str) -> str:
    """The ```python block right after the HTML comment containing ``marker``."""
    match = re.search(rf"<!--[^>]*{re.escape(marker)}[^>]*-->\s*```python\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert match, f"no python block after a comment with {marker!r} in {DOC}"
    return match.group(1)


def run_example(code: str, tmp_path: Path, **env: str) -> str:
    script = tmp_path / "example.py"
    script.write_text(code)
    child_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return run([sys.executable, str(script)], cwd=tmp_path, env=child_env, timeout=120.0)


@pytest.fixture
def default_pool_key(transactional_db: None, tome_library: Any) -> str:
    """The ``default`` pool the example reserves from, holding emulator-made pairs, and a key."""
    from keys.models import ApiKey
    from pool.models import Pool
    from pool.services import pairs_insert_bulk

    pool, _ = Pool.objects.update_or_create(name="default", defaults={"refill_enabled": False})
    pairs_insert_bulk(pool=pool, pairs=tome_library.generate_pairs(10))
    _, raw_key = ApiKey.objects.create_key(name="card-service", scopes=["reserve", "lookup", "detokenize"])
    return raw_key


def test_the_pool_example_runs_as_written_then_falls_back_with_tokenpool_stopped(
        default_pool_key, tokenpool_server, tome, tmp_path):
    code = example("example.py")
    env = {"TOKENPOOL_URL": tokenpool_server.url, "TOKENPOOL_API_KEY": default_pool_key,
           "TOME_BASE_URL": tome.base_url, "TOME_API_TOKEN": tome.client_token}

    assert run_example(code, tmp_path, **env).splitlines() == [
        "reserved from: pool", "status: USED", "lookups agree"]

    tokenpool_server.stop()
    tome.reset_stats()
    assert run_example(code, tmp_path, **env).splitlines() == [
        "reserved from: client_direct", "status: USED", "lookups agree"]
    assert tome.calls(tome.ns1, "generate") == 1


def test_the_library_example_runs_as_written(tome, tmp_path):
    out = run_example(example("also runs this block"), tmp_path,
                      TOME_BASE_URL=tome.base_url, TOME_API_TOKEN=tome.client_token)
    assert out.splitlines() == ["library approach ok"]
