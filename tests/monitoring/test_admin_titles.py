"""Issue 21.5: admin page titles name things (a pool's name, a key's name), never a bare id."""
from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from keys.models import KeyEvent
from monitoring.models import PoolConfigChange
from pool.models import TokenPair
from refill.models import RefillOutcome, RefillRun, RefillTrigger

pytestmark = pytest.mark.django_db


def _title(client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, url
    return re.search(r"<title>(.*?)</title>", response.content.decode(), re.S).group(1)


def test_change_pages_are_titled_by_names(admin_client, make_pool, make_api_key, admin_user):
    pool = make_pool("card-issuing-eu", pairs=1)
    pair = TokenPair.objects.get(pool=pool)
    now = timezone.now()
    run = RefillRun.objects.create(pool=pool, trigger=RefillTrigger.MANUAL, outcome=RefillOutcome.FAILED,
                                   finished_at=now + timedelta(seconds=1))
    # Values no pool id can equal (the title must not show the id; a value equal to it would look like one).
    change = PoolConfigChange.objects.create(pool=pool, field="target_size", old="1000010", new="1000020",
                                             changed_by=admin_user)
    key, _ = make_api_key(name="billing-web")
    event = KeyEvent.objects.filter(api_key=key).first() or KeyEvent.objects.create(api_key=key, action="created")

    for url in (f"/admin/pool/tokenpair/{pair.pk}/change/", f"/admin/refill/refillrun/{run.pk}/change/",
                f"/admin/monitoring/poolconfigchange/{change.pk}/change/"):
        title = _title(admin_client, url)
        assert "card-issuing-eu" in title, (url, title)
        assert f" {pool.pk} " not in f" {title} "
    assert "Available" in _title(admin_client, f"/admin/pool/tokenpair/{pair.pk}/change/")  # the label
    assert "billing-web" in _title(admin_client, f"/admin/keys/keyevent/{event.pk}/change/")
