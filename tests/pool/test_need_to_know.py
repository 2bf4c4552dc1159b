"""Need-to-know (issue 20, finding 1; contract section 2): a key answers only its own consumer's
pairs; another consumer's pair and a token the pool never issued answer exactly as an unknown
token, unless the key holds ``:any`` or ``:tome``. Every answer and refusal is audited with key and
consumer. And lookup misses are cached (finding 5): repeating a batch costs TOME each token once."""
from __future__ import annotations

import pytest

from keys.models import Consumer
from pool.models import AuditRecord

pytestmark = pytest.mark.django_db

UNKNOWN_BODY_KEYS = {"code", "detail", "correlation_id"}


@pytest.fixture
def team_a(make_api_key, api_as, default_pool, tome):
    key, raw = make_api_key(name="team-a-svc", scopes=["reserve", "lookup", "detokenize"])
    caller = api_as(raw)
    caller.api_key = key
    pair = caller.post("/api/v1/reservations", {}).json()
    caller.post(f"/api/v1/reservations/{pair['reservation_id']}/confirm")
    return caller, pair


def _caller(make_api_key, api_as, scopes, name=None, rate_limit=None):
    key, raw = make_api_key(scopes=scopes, name=name, rate_limit=rate_limit)
    caller = api_as(raw)
    caller.api_key = key
    return caller


def _unknown(caller, path, field, token):
    response = caller.post(path, {field: token}, HTTP_X_CORRELATION_ID="same-id")
    return response.status_code, {k: v for k, v in response.json().items()}


def test_another_consumers_pair_answers_exactly_as_an_unknown_token(team_a, make_api_key, api_as, tome):
    _a, pair = team_a
    team_b = _caller(make_api_key, api_as, ["lookup", "detokenize"])
    for path, field, token in [("/api/v1/lookup", "internal_token", pair["internal_token"]),
                               ("/api/v1/detokenize", "external_ref_id", pair["external_ref_id"])]:
        other = _unknown(team_b, path, field, token)
        never = _unknown(team_b, path, field, "9" * 16)
        assert other[0] == never[0] == 404
        assert other[1] == never[1]  # same body, word for word (same correlation id sent)
    batch = team_b.post("/api/v1/lookup/batch", {"internal_tokens": [pair["internal_token"], "9" * 16]}).json()
    assert batch["results"] == [{"internal_token": pair["internal_token"], "code": "not_found"},
                                {"internal_token": "9" * 16, "code": "not_found"}]
    batch = team_b.post("/api/v1/detokenize/batch", {"external_ref_ids": [pair["external_ref_id"]]}).json()
    assert batch["results"] == [{"external_ref_id": pair["external_ref_id"], "code": "not_found"}]
    # Without :tome, a miss never reaches TOME (no timing difference between the two refusals).
    assert tome.calls("ns2", "lookup") + tome.calls("ns2", "detokenize") == 0


def test_keys_of_the_same_consumer_share_its_pairs(team_a, make_api_key, api_as):
    a, pair = team_a
    key, raw = make_api_key(name="team-a-batch", scopes=["lookup"])
    key.consumer = a.api_key.consumer
    key.save()
    response = api_as(raw).post("/api/v1/lookup", {"internal_token": pair["internal_token"]})
    assert response.status_code == 200 and response.json()["source"] == "pool"
    assert a.post("/api/v1/detokenize", {"external_ref_id": pair["external_ref_id"]}).status_code == 200


def test_the_any_grant_answers_other_consumers_pairs(team_a, make_api_key, api_as, tome):
    _a, pair = team_a
    auditor = _caller(make_api_key, api_as, ["lookup", "lookup:any", "detokenize", "detokenize:any"])
    response = auditor.post("/api/v1/lookup", {"internal_token": pair["internal_token"]})
    assert response.status_code == 200 and response.json()["external_ref_id"] == pair["external_ref_id"]
    assert auditor.post("/api/v1/detokenize", {"external_ref_id": pair["external_ref_id"]}).status_code == 200
    # :any is not :tome: a token the pool never issued is still unknown, and TOME is not asked.
    assert auditor.post("/api/v1/lookup", {"internal_token": "9" * 16}).status_code == 404
    assert tome.calls("ns2", "lookup") == 0


def test_the_tome_grant_passes_through_but_never_reveals_another_consumers_pair(team_a, make_api_key, api_as,
                                                                              tome):
    from tome.provider import get_tome_client

    _a, pair = team_a
    legacy = get_tome_client().generate_pairs(1)[0]
    tome.reset_stats()
    caller = _caller(make_api_key, api_as, ["lookup", "lookup:tome"])
    response = caller.post("/api/v1/lookup", {"internal_token": legacy.internal_token})
    assert response.status_code == 200 and response.json()["source"] == "tome"
    assert caller.post("/api/v1/lookup", {"internal_token": pair["internal_token"]}).status_code == 404
    assert tome.calls("ns2", "lookup") == 1  # the pool's own pair never went to TOME
    plain = _caller(make_api_key, api_as, ["lookup"])
    assert plain.post("/api/v1/lookup", {"internal_token": legacy.internal_token}).status_code == 404
    assert tome.calls("ns2", "lookup") == 1


def test_every_answer_and_refusal_is_audited_with_key_and_consumer(team_a, make_api_key, api_as):
    a, pair = team_a
    team_b = _caller(make_api_key, api_as, ["lookup"], name="team-b-svc")
    a.post("/api/v1/lookup", {"internal_token": pair["internal_token"]})
    team_b.post("/api/v1/lookup", {"internal_token": pair["internal_token"]})
    rows = list(AuditRecord.objects.order_by("id").values_list("api_key_id", "consumer__name", "outcome", "pair_id"))
    assert [(r[0], r[1], r[2]) for r in rows] == [(a.api_key.pk, "team-a-svc", "found"),
                                                  (team_b.api_key.pk, "team-b-svc", "other_consumer")]
    assert rows[0][3] == rows[1][3] is not None  # the refused pair is named in the audit, not in the answer
    assert Consumer.objects.filter(name="team-b-svc").exists()


def test_repeated_unknown_batches_cost_tome_each_token_once_and_aggregate_the_audit(make_api_key, api_as,
                                                                                   default_pool, tome):
    # 64,000 items in a few seconds: above the default 1,000 items/s, which counts items since issue 20.
    caller = _caller(make_api_key, api_as, ["lookup", "lookup:tome"], rate_limit=1_000_000)
    tokens = [f"{i:016d}" for i in range(1000)]
    first = caller.post("/api/v1/lookup/batch", {"internal_tokens": tokens})
    assert first.status_code == 200 and all(r["code"] == "not_found" for r in first.json()["results"])
    one_batch = tome.calls("ns2", "lookup")
    assert one_batch >= 1
    for _ in range(63):
        assert caller.post("/api/v1/lookup/batch", {"internal_tokens": tokens}).status_code == 200
    assert tome.calls("ns2", "lookup") == one_batch  # 64 batches, each unknown token asked once
    # 1,000 rows for the first request, then one aggregate row per repeat, each standing for 1,000.
    assert AuditRecord.objects.count() == 1000 + 63
    aggregates = AuditRecord.objects.filter(occurrences=1000)
    assert aggregates.count() == 63 and {r.outcome for r in aggregates} == {"not_found"}



@pytest.mark.django_db(transaction=True)
def test_concurrent_batches_of_the_same_unknown_tokens_ask_tome_once(make_api_key, api_as, default_pool, tome):
    import threading

    caller_key, raw = make_api_key(scopes=["lookup", "lookup:tome"], rate_limit=1_000_000)
    tokens = [f"7{i:015d}" for i in range(200)]
    api_as(raw).post("/api/v1/lookup/batch", {"internal_tokens": ["8" * 16]})  # warm: key verified
    tome.reset_stats()
    barrier = threading.Barrier(8)
    statuses: list[int] = []

    def worker() -> None:
        from django.db import connection

        try:
            barrier.wait()
            statuses.append(api_as(raw).post("/api/v1/lookup/batch", {"internal_tokens": tokens}).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 8
    assert tome.calls("ns2", "lookup") == 1  # one batch call for the 200 tokens, not 8
