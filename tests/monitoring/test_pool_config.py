"""Pool tunables edited in the admin: friendly validation (never a 500) and an audit of who changed what."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib import admin

from monitoring.models import PoolConfigChange
from monitoring.pool_config import PoolConfigAdminMixin, PoolConfigForm
from pool.models import Pool

pytestmark = pytest.mark.django_db


def _form_data(pool: Pool, **changes) -> dict[str, str]:
    data = {
        "name": pool.name, "environment": pool.environment, "ns1_namespace": pool.ns1_namespace,
        "ns2_namespace": pool.ns2_namespace, "target_size": pool.target_size, "low_watermark": pool.low_watermark,
        "critical_watermark": pool.critical_watermark, "batch_size": pool.batch_size,
        "refill_interval_minutes": pool.refill_interval_minutes, "reservation_ttl": "00:15:00",
        "refill_enabled": "on" if pool.refill_enabled else "",
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v != ""}


@pytest.fixture
def pool() -> Pool:
    return Pool.objects.create(name="tunable", target_size=1000, low_watermark=200, critical_watermark=50,
                               batch_size=500)


def test_registered_pool_admin_gains_validation_and_keeps_other_rooms_actions():
    pool_admin = admin.site._registry[Pool]
    assert isinstance(pool_admin, PoolConfigAdminMixin)
    assert issubclass(pool_admin.form, PoolConfigForm)
    from refill.admin import refill_now

    assert refill_now in pool_admin.actions  # added to the same instance by the refill room


@pytest.mark.parametrize(("changes", "field", "message"), [
    ({"low_watermark": 1000}, "low_watermark", "must be below the target size (1,000)"),
    ({"target_size": 150}, "low_watermark", "must be below the target size (150)"),
    ({"critical_watermark": 201}, "critical_watermark", "must not exceed the low watermark (200)"),
    ({"batch_size": 5001}, "batch_size", "between 1 and 5,000"),
    ({"batch_size": 0}, "batch_size", "between 1 and 5,000"),
    ({"refill_interval_minutes": 0}, "refill_interval_minutes", "at least 1 minute"),
    ({"reservation_ttl": "00:00:00"}, "reservation_ttl", "longer than zero"),
])
def test_invalid_tunables_show_a_field_error_not_a_500(admin_client, pool, changes, field, message):
    response = admin_client.post(f"/admin/pool/pool/{pool.pk}/change/", _form_data(pool, **changes))
    assert response.status_code == 200  # the form again, with errors
    errors = response.context["adminform"].form.errors
    assert field in errors and any(message in e for e in errors[field]), errors
    # Django's generic "Constraint … is violated" must not pile up on top of the friendly message.
    assert not any("Constraint" in e for e in errors.get("__all__", []))
    pool.refresh_from_db()
    assert (pool.target_size, pool.low_watermark, pool.batch_size) == (1000, 200, 500)
    assert not PoolConfigChange.objects.filter(pool=pool).exists()


def test_batch_limit_follows_the_configured_tome_limit(pool, settings):
    settings.TOME_MAX_BATCH = 2000
    form = PoolConfigForm(data=_form_data(pool, batch_size=2500), instance=pool)
    assert not form.is_valid() and "between 1 and 2,000" in form.errors["batch_size"][0]


def test_a_valid_edit_is_saved_and_audited_field_by_field(admin_client, admin_user, pool):
    response = admin_client.post(f"/admin/pool/pool/{pool.pk}/change/",
                                 _form_data(pool, target_size=5000, low_watermark=1200, batch_size=2500))
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else ""
    pool.refresh_from_db()
    assert (pool.target_size, pool.low_watermark, pool.batch_size) == (5000, 1200, 2500)
    changes = {c.field: (c.old, c.new, c.changed_by) for c in PoolConfigChange.objects.filter(pool=pool)}
    assert changes == {
        "target_size": ("1000", "5000", admin_user),
        "low_watermark": ("200", "1200", admin_user),
        "batch_size": ("500", "2500", admin_user),
    }

    admin_client.post(f"/admin/pool/pool/{pool.pk}/change/",
                      _form_data(pool, reservation_ttl="00:30:00", refill_enabled=""))
    latest = {c.field: (c.old, c.new) for c in PoolConfigChange.objects.filter(pool=pool)}
    assert latest["reservation_ttl"] == (str(timedelta(minutes=15)), str(timedelta(minutes=30)))
    assert latest["refill_enabled"] == ("True", "False")
    assert admin_client.get("/admin/monitoring/poolconfigchange/").status_code == 200


def test_creating_a_pool_in_the_admin_is_audited(admin_client):
    data = _form_data(Pool(name="fresh", target_size=300, low_watermark=100, critical_watermark=10, batch_size=100,
                           refill_interval_minutes=60))
    response = admin_client.post("/admin/pool/pool/add/", data)
    assert response.status_code == 302
    created = Pool.objects.get(name="fresh")
    audited = dict(PoolConfigChange.objects.filter(pool=created).values_list("field", "new"))
    assert audited["target_size"] == "300" and audited["low_watermark"] == "100"
