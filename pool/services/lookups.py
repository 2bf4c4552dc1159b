"""Lookup (internal token → pair) and detokenize (external reference id → pair), single and batch,
each audited with the key and its consumer.

Need-to-know (contract section 2): a key sees only pairs reserved by its own consumer. Another
consumer's pair and a token the pool never issued answer exactly as an unknown token does, unless
the key holds ``<action>:any`` (other consumers' pairs) or ``<action>:tome`` (a live NS2 call for
tokens the database does not hold). Without ``:tome`` a miss never reaches TOME, so a refusal
costs the same single indexed query as an unknown token: no timing difference to measure.

Misses that TOME does not know are remembered in the Django cache (shared when ``REDIS_URL`` is
set) for ``LOOKUP_NEGATIVE_CACHE_SECONDS``; the misses of concurrent requests in one process go to
TOME one request at a time, so a batch repeated N times costs TOME each unknown token once."""
from __future__ import annotations

import hashlib
import hmac
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache

from common.errors import PairNotFound, UpstreamUnavailable
from keys.models import ApiKey
from pool.models import AuditAction, AuditOutcome, AuditRecord, PairSource, PairStatus, TokenPair
from pool.services.tome import tome_errors_as
from tokenpool_tome.correlation import get_correlation_id
from tome.provider import get_tome_client


@dataclass(frozen=True, slots=True)
class PairResult:
    internal_token: str
    external_ref_id: str
    status: str
    source: str  # "pool": answered from the database; "tome": a live NS2 call (pair not stored)


# Pairs resolved only by TOME were issued before the pool existed; they are in use.
_TOME_RESOLVED_STATUS = PairStatus.USED
# Single flight per token and process: a request whose unknown tokens another thread is already
# asking TOME about waits for that answer (then finds it in the negative cache) instead of asking
# again; misses for other tokens go ahead in parallel.
_in_flight: dict[str, threading.Event] = {}
_in_flight_lock = threading.Lock()


def pair_lookup(*, internal_token: str, api_key: ApiKey) -> PairResult:
    """internal token (NS1) → its pair; raises PairNotFound."""
    result = _resolve(action=AuditAction.LOOKUP, tokens=[internal_token], api_key=api_key, single=True)[0]
    if result is None:
        raise PairNotFound()
    return result


def pair_detokenize(*, external_ref_id: str, api_key: ApiKey) -> PairResult:
    """external reference id (NS2) → its pair; raises PairNotFound."""
    result = _resolve(action=AuditAction.DETOKENIZE, tokens=[external_ref_id], api_key=api_key, single=True)[0]
    if result is None:
        raise PairNotFound()
    return result


def pair_lookup_batch(*, internal_tokens: Sequence[str], api_key: ApiKey) -> list[PairResult | None]:
    """One result per item, in request order; None = not found."""
    return _resolve(action=AuditAction.LOOKUP, tokens=internal_tokens, api_key=api_key, single=False)


def pair_detokenize_batch(*, external_ref_ids: Sequence[str], api_key: ApiKey) -> list[PairResult | None]:
    return _resolve(action=AuditAction.DETOKENIZE, tokens=external_ref_ids, api_key=api_key, single=False)


def audit_token_digest(token: str) -> str:
    """HMAC-SHA-256 of a token under the server's secret: an investigator with the token can find
    its audit rows, but the audit table alone cannot be brute-forced back to 16-digit tokens."""
    return hmac.new(settings.SECRET_KEY.encode(), token.encode(), hashlib.sha256).hexdigest()


# (pair id, internal token, external ref id, status, consumer id of the reserving key)
_Row = tuple[int, str, str, str, int | None]
_Entry = tuple[str, int | None, str]  # (token, pair id, audit outcome)


def _resolve(*, action: str, tokens: Sequence[str], api_key: ApiKey, single: bool) -> list[PairResult | None]:
    """Answer from the database (unique index); only tokens the database does not hold at all may go
    to TOME, in one NS2 call, and only for a key with ``<action>:tome``. AVAILABLE pairs were never
    issued, so they are 'not found' and never sent to TOME (which would know them)."""
    key_field = "internal_token" if action == AuditAction.LOOKUP else "external_ref_id"
    wanted = list(dict.fromkeys(tokens))
    rows = TokenPair.objects.filter(**{f"{key_field}__in": wanted}).values_list(
        "id", "internal_token", "external_ref_id", "status", "reserved_by__consumer_id")
    known: dict[str, _Row] = {(row[1] if key_field == "internal_token" else row[2]): row for row in rows}
    misses = [t for t in wanted if t not in known]
    from_tome: dict[str, str | None] = {}
    if misses and api_key.has_scope(f"{action}:tome"):
        try:
            from_tome = _tome_misses(action=action, tokens=misses, single=single)
        except UpstreamUnavailable:
            _audit(api_key=api_key, action=action, entries=[
                (t, known[t][0] if t in known else None, AuditOutcome.UPSTREAM_UNAVAILABLE) for t in tokens
            ])
            raise
    see_any = api_key.has_scope(f"{action}:any")
    results: list[PairResult | None] = []
    entries: list[_Entry] = []
    for token in tokens:
        result, entry = _answer(token=token, row=known.get(token), tome_other=from_tome.get(token),
                                key_field=key_field, consumer_id=api_key.consumer_id, see_any=see_any)
        results.append(result)
        entries.append(entry)
    _audit(api_key=api_key, action=action, entries=entries)
    return results


def _answer(*, token: str, row: _Row | None, tome_other: str | None, key_field: str, consumer_id: int,
            see_any: bool) -> tuple[PairResult | None, _Entry]:
    if row is not None:
        pair_id, internal, external, status, owner = row
        if status == PairStatus.AVAILABLE:
            return None, (token, pair_id, AuditOutcome.NOT_FOUND)
        if owner != consumer_id and not see_any:
            return None, (token, pair_id, AuditOutcome.OTHER_CONSUMER)
        return PairResult(internal, external, status, PairSource.POOL), (token, pair_id, AuditOutcome.FOUND)
    if tome_other is None:
        return None, (token, None, AuditOutcome.NOT_FOUND)
    internal, external = (token, tome_other) if key_field == "internal_token" else (tome_other, token)
    return PairResult(internal, external, _TOME_RESOLVED_STATUS, "tome"), (token, None, AuditOutcome.TOME)


def _negative_key(action: str, token: str) -> str:
    return f"lookup-miss:{action}:{hashlib.sha256(token.encode()).hexdigest()}"


def _tome_misses(*, action: str, tokens: list[str], single: bool) -> dict[str, str | None]:
    """TOME's answer for tokens the database does not hold; tokens TOME did not know within the
    last LOOKUP_NEGATIVE_CACHE_SECONDS are answered from the negative cache without a call."""
    answers: dict[str, str | None] = dict.fromkeys(tokens)
    mine, others = _claim_flights(action, tokens)
    try:
        _ask_tome(action=action, tokens=mine, single=single, answers=answers)
    finally:
        _land_flights(action, mine)
    if others:
        for event in {id(e): e for e in others.values()}.values():
            event.wait()
        # What the other flight learned: unknown tokens are now negative-cached; known ones (TOME
        # answers are not cached) or a failed flight are asked again here.
        cached = cache.get_many([_negative_key(action, t) for t in others])
        _ask_tome(action=action, tokens=[t for t in others if _negative_key(action, t) not in cached],
                  single=single, answers=answers)
    return answers


def _claim_flights(action: str, tokens: list[str]) -> tuple[list[str], dict[str, threading.Event]]:
    """(tokens this request asks TOME about, tokens another thread is asking about → its event)."""
    mine: list[str] = []
    others: dict[str, threading.Event] = {}
    event = threading.Event()
    with _in_flight_lock:  # the cache is read under the lock: a flight that just landed is seen
        cached = cache.get_many([_negative_key(action, t) for t in tokens])
        for token in dict.fromkeys(tokens):
            key = _negative_key(action, token)
            if key in cached:
                continue
            if key in _in_flight:
                others[token] = _in_flight[key]
            else:
                _in_flight[key] = event
                mine.append(token)
    return mine, others


def _land_flights(action: str, tokens: list[str]) -> None:
    with _in_flight_lock:
        events = {_in_flight.pop(_negative_key(action, t), None) for t in tokens}
    for event in events:
        if event is not None:
            event.set()


def _ask_tome(*, action: str, tokens: list[str], single: bool, answers: dict[str, str | None]) -> None:
    """Ask TOME about ``tokens``, fill ``answers`` and negative-cache the ones TOME does not know."""
    if not tokens:
        return
    answers.update(zip(tokens, _tome_resolve(action=action, tokens=tokens, single=single and len(tokens) == 1),
                       strict=True))
    unknown = {_negative_key(action, t): 1 for t in tokens if answers[t] is None}
    if unknown:
        cache.set_many(unknown, timeout=settings.LOOKUP_NEGATIVE_CACHE_SECONDS)


def _tome_resolve(*, action: str, tokens: list[str], single: bool) -> list[str | None]:
    # A token the database does not hold belongs to no pool, so the deployment's default NS2
    # (settings.TOME_NS2) is asked: tokens issued before the pool existed live there.
    client = get_tome_client()
    with tome_errors_as(UpstreamUnavailable, operation=f"a {action}"):
        if action == AuditAction.LOOKUP:
            return [client.external_for(tokens[0])] if single else client.external_for_batch(tokens)
        return [client.internal_for(tokens[0])] if single else client.internal_for_batch(tokens)


def _seen_miss_key(api_key: ApiKey, action: str, token: str, outcome: str) -> str:
    key_id = hashlib.sha256(api_key.pk.encode()).hexdigest()[:16]
    return f"audited-miss:{key_id}:{action}:{outcome}:{hashlib.sha256(token.encode()).hexdigest()}"


def _audit(*, api_key: ApiKey, action: str, entries: Sequence[_Entry]) -> None:
    """One row per distinct (token, outcome) of the request, with how often it was asked. A refusal
    (not found, another consumer's pair) this key already had audited for the same token within
    LOOKUP_NEGATIVE_CACHE_SECONDS joins one aggregate row per outcome instead: a client repeating
    a batch of unknown tokens writes one row per token once, then one row per request."""
    counts = Counter(entries)
    refusals = [e for e in counts if e[2] in (AuditOutcome.NOT_FOUND, AuditOutcome.OTHER_CONSUMER)]
    seen = cache.get_many([_seen_miss_key(api_key, action, t, o) for t, _p, o in refusals]) if refusals else {}
    repeated: Counter[str] = Counter()
    repeated_tokens: dict[str, list[str]] = {}
    rows: list[tuple[str, int | None, str, int]] = []
    for entry, n in counts.items():
        token, pair_id, outcome = entry
        if entry in refusals and _seen_miss_key(api_key, action, token, outcome) in seen:
            repeated[outcome] += n
            repeated_tokens.setdefault(outcome, []).append(token)
        else:
            rows.append((audit_token_digest(token), pair_id, outcome, n))
    for outcome, n in repeated.items():
        # The aggregate row's digest is the HMAC of its sorted tokens, one per line.
        rows.append((audit_token_digest("\n".join(sorted(repeated_tokens[outcome]))), None, outcome, n))
    correlation_id = get_correlation_id() or ""
    records = [AuditRecord(api_key_id=api_key.pk, consumer_id=api_key.consumer_id, action=action, pair_id=pair_id,
                           token_digest=digest, correlation_id=correlation_id, outcome=outcome, occurrences=n)
               for digest, pair_id, outcome, n in rows]
    if len(records) == 1:
        records[0].save(force_insert=True)
    else:
        AuditRecord.objects.bulk_create(records)
    newly = {_seen_miss_key(api_key, action, t, o): 1 for t, _p, o in refusals
             if _seen_miss_key(api_key, action, t, o) not in seen}
    if newly:
        cache.set_many(newly, timeout=settings.LOOKUP_NEGATIVE_CACHE_SECONDS)

