"""Issue 20, finding 2: the admin masks tokens everywhere; a full value takes the reveal permission, a
reason and leaves an audit record; searches by a full token keep working and are audited."""
from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.db import IntegrityError, connection, transaction
from django.test import Client

from pool.models import TokenAccessKind, TokenPair, TokenReveal
from pool.services import audit_token_digest
from pool.services.reveals import mask_token

pytestmark = pytest.mark.django_db


def _client_for(django_user_model, username: str, *codenames: str) -> tuple[object, Client]:
    user = django_user_model.objects.create_user(username, password=None, is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="pool", codename__in=codenames))
    client = Client()
    client.force_login(user)
    return django_user_model.objects.get(pk=user.pk), client


@pytest.fixture
def reserved(api, default_pool) -> dict:
    body = api.post("/api/v1/reservations", {}).json()
    return {**body, "pk": TokenPair.objects.get(internal_token=body["internal_token"]).pk}


@pytest.fixture
def viewer(django_user_model):
    return _client_for(django_user_model, "viewer", "view_tokenpair", "view_auditrecord")


@pytest.fixture
def revealer(django_user_model):
    return _client_for(django_user_model, "revealer", "view_tokenpair", "reveal_tokenpair", "view_tokenreveal")


def _shows_no_full_token(content: bytes, pair: dict) -> bool:
    text = content.decode()
    return pair["internal_token"] not in text and pair["external_ref_id"] not in text


def test_mask_shows_at_most_the_last_four_characters():
    assert mask_token("4111222233334444") == "••••4444"
    assert mask_token("abcdefgh") == "••••"  # short values show nothing of themselves
    assert mask_token("") == ""


def test_view_only_staff_see_masked_tokens_in_list_detail_and_search(viewer, reserved):
    user, client = viewer
    pages = [client.get("/admin/pool/tokenpair/"),
             client.get(f"/admin/pool/tokenpair/{reserved['pk']}/change/"),
             client.get("/admin/pool/tokenpair/", {"q": reserved["external_ref_id"]}),
             client.get("/admin/pool/tokenpair/", {"q": reserved["internal_token"]}),
             client.get("/admin/pool/auditrecord/")]
    for response in pages:
        assert response.status_code == 200
    # The search box echoes the term the user typed; the other half of the mapping never appears.
    for index in (0, 1, 4):
        assert _shows_no_full_token(pages[index].content, reserved)
    assert reserved["internal_token"] not in pages[2].content.decode()
    assert reserved["external_ref_id"] not in pages[3].content.decode()
    assert mask_token(reserved["internal_token"]) in pages[1].content.decode()
    assert len(pages[2].context["cl"].result_list) == 1  # exact search still finds the pair
    assert "Reveal full tokens" not in pages[1].content.decode()
    # No reveal without the permission, neither the form nor a POST with a reason.
    assert client.get(f"/admin/pool/tokenpair/{reserved['pk']}/reveal/").status_code == 403
    response = client.post(f"/admin/pool/tokenpair/{reserved['pk']}/reveal/", {"reason": "INC-1234 chargeback query"})
    assert response.status_code == 403 and _shows_no_full_token(response.content, reserved)
    assert not TokenReveal.objects.filter(kind=TokenAccessKind.REVEAL).exists()


def test_searches_are_audited_by_digest_never_the_raw_term(viewer, reserved):
    user, client = viewer
    client.get("/admin/pool/tokenpair/", {"q": reserved["external_ref_id"]})
    client.get("/admin/pool/tokenpair/", {"q": "no-such-token-0000"})
    rows = list(TokenReveal.objects.filter(user=user).order_by("id"))
    assert [(r.kind, r.term_digest, r.matches, r.pair_id) for r in rows] == [
        ("search", audit_token_digest(reserved["external_ref_id"]), 1, reserved["pk"]),
        ("search", audit_token_digest("no-such-token-0000"), 0, None),
    ]
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM pool_tokenreveal")
        stored = repr(cursor.fetchall())
    assert reserved["external_ref_id"] not in stored


def test_reveal_needs_a_reason_and_is_audited(revealer, reserved):
    user, client = revealer
    detail = client.get(f"/admin/pool/tokenpair/{reserved['pk']}/change/").content.decode()
    assert "Reveal full tokens" in detail and _shows_no_full_token(detail.encode(), reserved)
    url = f"/admin/pool/tokenpair/{reserved['pk']}/reveal/"
    form = client.get(url)
    assert form.status_code == 200 and _shows_no_full_token(form.content, reserved)
    for reason in ("", "   ", "because"):
        refused = client.post(url, {"reason": reason})
        assert refused.status_code == 200 and _shows_no_full_token(refused.content, reserved)
    assert not TokenReveal.objects.exists()

    shown = client.post(url, {"reason": "INC-1234: chargeback dispute, card issuer asked"})
    assert shown.status_code == 200 and "no-store" in shown["Cache-Control"]
    text = shown.content.decode()
    assert reserved["internal_token"] in text and reserved["external_ref_id"] in text
    record = TokenReveal.objects.get()
    assert (record.kind, record.user, record.pair_id, record.reason) == (
        "reveal", user, reserved["pk"], "INC-1234: chargeback dispute, card issuer asked")

    audit = client.get("/admin/pool/tokenreveal/").content.decode()
    assert "INC-1234: chargeback dispute" in audit and "revealer" in audit


def test_reveal_records_are_append_only_in_the_database(revealer, reserved):
    user, client = revealer
    client.post(f"/admin/pool/tokenpair/{reserved['pk']}/reveal/", {"reason": "INC-1234 chargeback query"})
    for sql in ("UPDATE pool_tokenreveal SET reason = 'nothing'", "DELETE FROM pool_tokenreveal"):
        with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql)
    assert TokenReveal.objects.get().reason == "INC-1234 chargeback query"


def test_superuser_pages_are_masked_too(admin_client, reserved):
    for url in ("/admin/pool/tokenpair/", f"/admin/pool/tokenpair/{reserved['pk']}/change/"):
        response = admin_client.get(url)
        assert response.status_code == 200 and _shows_no_full_token(response.content, reserved)


def test_searching_the_lookup_audit_by_a_token_is_audited_too(viewer, reserved, api):
    user, client = viewer
    api.post("/api/v1/lookup", {"internal_token": reserved["internal_token"]})
    response = client.get("/admin/pool/auditrecord/", {"q": reserved["internal_token"]})
    assert response.status_code == 200 and len(response.context["cl"].result_list) >= 1
    assert reserved["external_ref_id"] not in response.content.decode()
    record = TokenReveal.objects.get(user=user)
    assert (record.kind, record.term_digest, record.pair_id) == (
        "search", audit_token_digest(reserved["internal_token"]), None)
    assert record.matches >= 1
