"""tokenpool/settings/base.py for scaled-out deployments: REDIS_URL (and its deprecated old name) and
DATABASE_PGBOUNCER, read the way a process reads them at start."""
from __future__ import annotations

import runpy
import warnings

import pytest

from tests.fixtures.processes import ROOT

SETTINGS = ROOT / "tokenpool" / "settings" / "base.py"  # everything these read lives in the base layer


def load(monkeypatch, **env: str) -> dict:
    for name in ("REDIS_URL", "Q_REDIS_URL", "DATABASE_PGBOUNCER", "SHARED_LIMITS_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(SETTINGS))


def test_without_redis_everything_shared_lives_in_postgresql(monkeypatch):
    s = load(monkeypatch)
    assert s["REDIS_URL"] == ""
    assert s["SHARED_LIMITS_BACKEND"] == "postgres"
    assert s["Q_CLUSTER"]["orm"] == "default" and "redis" not in s["Q_CLUSTER"]
    assert s["CACHES"]["default"]["BACKEND"].endswith("LocMemCache")


def test_redis_url_is_the_broker_the_shared_cache_and_the_limiter(monkeypatch):
    s = load(monkeypatch, REDIS_URL="redis://cache.internal:6379/2")
    assert s["Q_CLUSTER"]["redis"] == "redis://cache.internal:6379/2" and "orm" not in s["Q_CLUSTER"]
    assert s["CACHES"]["default"]["BACKEND"] == "django.core.cache.backends.redis.RedisCache"
    assert s["CACHES"]["default"]["LOCATION"] == "redis://cache.internal:6379/2"
    assert s["SHARED_LIMITS_BACKEND"] == "redis"


def test_q_redis_url_still_works_with_a_deprecation_warning(monkeypatch):
    with pytest.warns(FutureWarning, match="Q_REDIS_URL is deprecated"):
        s = load(monkeypatch, Q_REDIS_URL="redis://old:6379/0")
    assert s["REDIS_URL"] == "redis://old:6379/0" == s["Q_CLUSTER"]["redis"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new name wins, silently
        s = load(monkeypatch, Q_REDIS_URL="redis://old:6379/0", REDIS_URL="redis://new:6379/0")
    assert s["Q_CLUSTER"]["redis"] == "redis://new:6379/0"


def test_database_pgbouncer_turns_off_what_transaction_pooling_breaks(monkeypatch):
    connection = {"NAME": "tokenpool", "HOST": "/tmp"}
    plain = load(monkeypatch)["database_settings"](connection)
    assert "options" in plain["OPTIONS"] and not plain.get("DISABLE_SERVER_SIDE_CURSORS")
    db = load(monkeypatch, DATABASE_PGBOUNCER="1")["database_settings"](connection)
    assert db["DISABLE_SERVER_SIDE_CURSORS"] is True
    assert "options" not in db["OPTIONS"]  # PgBouncer refuses the startup parameter
    assert db["OPTIONS"]["prepare_threshold"] is None
