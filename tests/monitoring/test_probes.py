"""/healthz and /readyz (contract section 3): liveness without a key, readiness per dependency."""
from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


@pytest.fixture
def client_() -> Client:
    return Client(raise_request_exception=False)


def test_healthz_is_ok_without_a_key(client_):
    response = client_.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readyz_ok_when_database_tome_and_pools_are(client_, default_pool, tome):
    from pool.models import Pool

    Pool.objects.exclude(pk=default_pool.pk).delete()  # only pools with pairs
    response = client_.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "tome": "ok", "pools": "ok"}}


def test_readyz_is_503_degraded_while_tome_is_down(client_, default_pool, tome):
    tome.set_faults(outage=True)
    response = client_.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded" and body["checks"]["tome"] == "down" and body["checks"]["database"] == "ok"


def test_readyz_reports_an_empty_pool_as_degraded(client_, default_pool, make_pool, tome):
    make_pool("drained", pairs=0)
    response = client_.get("/readyz")
    assert response.status_code == 200  # the fallback still serves: ready, but degraded
    assert response.json()["status"] == "degraded" and response.json()["checks"]["pools"] == "degraded"
