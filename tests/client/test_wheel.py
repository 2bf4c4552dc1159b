"""The ``tokenpool-tome-client`` wheel alone: built like ``make wheel``, installed into a fresh
virtualenv (no Django, no repository on the path), it creates, confirms, looks up and detokenizes
cards against a real TokenPool process and the emulator, then falls back to TOME once that
TokenPool process is stopped."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.client.conftest import run

pytestmark = pytest.mark.slow

SMOKE = Path(__file__).with_name("wheel_smoke.py")


def smoke(python: Path, phase: str, *args: str) -> dict[str, Any]:
    # -I: no PYTHONPATH, no user site, no script directory on sys.path; cwd outside the repository.
    out = run([str(python), "-I", str(SMOKE), phase, *args], cwd=python.parent, timeout=120.0)
    return json.loads(out.strip().splitlines()[-1])


def test_the_wheel_alone_uses_tokenpool_then_falls_back_to_tome_when_it_stops(
        wheel_python, tokenpool_server, emulator_pool, tome, tome_library):
    common = [tokenpool_server.url, emulator_pool["key"], emulator_pool["pool"].name,
              tome.base_url, tome.client_token, tome.ns1, tome.ns2]

    card = smoke(wheel_python, "pool", *common)

    assert card["source"] == "pool" and card["status"] == "USED"
    from pool.models import TokenPair

    stored = TokenPair.objects.get(internal_token=card["internal_token"])
    assert stored.status == "USED" and stored.external_ref_id == card["external_ref_id"]

    tome.reset_stats()
    tokenpool_server.stop()
    direct = smoke(wheel_python, "fallback", *common, card["internal_token"], card["external_ref_id"])

    assert direct["source"] == "client_direct"
    # TOME made that pair live (one NS1 generate, one NS2 tokenize) and resolves it on its own.
    assert tome.calls(tome.ns1, "generate") == 1 and tome.calls(tome.ns2, "tokenize") == 1
    assert tome_library.internal_for(direct["external_ref_id"]) == direct["internal_token"]
    assert not TokenPair.objects.filter(internal_token=direct["internal_token"]).exists()
