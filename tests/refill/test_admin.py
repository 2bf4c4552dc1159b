"""Admin: the refill-run history is read-only and filterable; "Refill now" queues a manual refill."""
from __future__ import annotations

import pytest
from django.utils import timezone
from django_q.models import OrmQ

from refill.models import RefillOutcome, RefillRun, RefillTrigger
from refill.services import TASK_MANUAL

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client, django_user_model):
    user = django_user_model.objects.create_superuser("refill-admin", "a@example.com", "pw-not-used-elsewhere")
    client.force_login(user)
    return client


def test_refill_runs_are_listed_filterable_and_read_only(staff_client, make_pool):
    pool = make_pool("listed")
    ok = RefillRun.objects.create(pool=pool, trigger=RefillTrigger.SCHEDULED, outcome=RefillOutcome.SUCCEEDED,
                                  requested=100, inserted=100, finished_at=timezone.now())
    bad = RefillRun.objects.create(pool=pool, trigger=RefillTrigger.LOW_WATERMARK, outcome=RefillOutcome.FAILED,
                                   requested=100, inserted=0, error="TOME unavailable", finished_at=timezone.now())
    page = staff_client.get("/admin/refill/refillrun/")
    assert page.status_code == 200
    assert b"TOME unavailable" in page.content
    failed_only = staff_client.get("/admin/refill/refillrun/", {"outcome__exact": "failed"})
    assert failed_only.status_code == 200
    assert list(failed_only.context["cl"].result_list) == [bad]
    detail = staff_client.get(f"/admin/refill/refillrun/{ok.pk}/change/")
    assert detail.status_code == 200 and b'name="_save"' not in detail.content
    assert staff_client.post(f"/admin/refill/refillrun/{ok.pk}/change/", {"outcome": "failed"}).status_code == 403
    assert staff_client.get("/admin/refill/refillrun/add/").status_code == 403
    ok.refresh_from_db()
    assert ok.outcome == RefillOutcome.SUCCEEDED


def test_refill_now_action_queues_a_manual_refill_per_selected_pool(staff_client, make_pool):
    first, second = make_pool("first"), make_pool("second")
    response = staff_client.post("/admin/pool/pool/", {"action": "refill_now",
                                                       "_selected_action": [first.pk, second.pk]}, follow=True)
    assert response.status_code == 200
    messages = [str(m) for m in response.context["messages"]]
    assert any("first" in m and "queued" in m for m in messages)
    assert any("second" in m and "queued" in m for m in messages)
    queued = sorted(m.task["args"][0] for m in OrmQ.objects.all() if m.task.get("func") == TASK_MANUAL)
    assert queued == sorted([first.pk, second.pk])
