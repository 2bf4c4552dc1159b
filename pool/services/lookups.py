"""Lookup (internal token → pair) and detokenize (external reference id → pair), single and batch,
each audited. Answered from the database; only tokens it does not hold at all go to TOME."""
from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings

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


def _resolve(*, action: str, tokens: Sequence[str], api_key: ApiKey, single: bool) -> list[PairResult | None]:
    """Answer from the database (unique index); only tokens the database does not hold at all go to
    TOME, in one NS2 call. AVAILABLE pairs were never issued, so they are 'not found' and never
    sent to TOME (which would know them)."""
    key_field = "internal_token" if action == AuditAction.LOOKUP else "external_ref_id"
    wanted = list(dict.fromkeys(tokens))
    rows = TokenPair.objects.filter(**{f"{key_field}__in": wanted}).values_list(
        "id", "internal_token", "external_ref_id", "status")
    known: dict[str, tuple[int, str, str, str]] = {
        (row[1] if key_field == "internal_token" else row[2]): row for row in rows
    }
    misses = [t for t in wanted if t not in known]
    from_tome: dict[str, str | None] = {}
    if misses:
        try:
            from_tome = dict(zip(misses, _tome_resolve(action=action, tokens=misses, single=single), strict=True))
        except UpstreamUnavailable:
            _audit(api_key=api_key, action=action, entries=[
                (t, known[t][0] if t in known else None, AuditOutcome.UPSTREAM_UNAVAILABLE) for t in tokens
            ])
            raise

    results: list[PairResult | None] = []
    entries: list[tuple[str, int | None, str]] = []
    for token in tokens:
        row = known.get(token)
        if row is not None:
            pair_id, internal, external, status = row
            if status == PairStatus.AVAILABLE:
                results.append(None)
                entries.append((token, pair_id, AuditOutcome.NOT_FOUND))
            else:
                results.append(PairResult(internal, external, status, PairSource.POOL))
                entries.append((token, pair_id, AuditOutcome.FOUND))
            continue
        other = from_tome.get(token)
        if other is None:
            results.append(None)
            entries.append((token, None, AuditOutcome.NOT_FOUND))
        else:
            internal, external = (token, other) if key_field == "internal_token" else (other, token)
            results.append(PairResult(internal, external, _TOME_RESOLVED_STATUS, "tome"))
            entries.append((token, None, AuditOutcome.TOME))
    _audit(api_key=api_key, action=action, entries=entries)
    return results


def _tome_resolve(*, action: str, tokens: list[str], single: bool) -> list[str | None]:
    # A token the database does not hold belongs to no pool, so the deployment's default NS2
    # (settings.TOME_NS2) is asked: tokens issued before the pool existed live there.
    client = get_tome_client()
    with tome_errors_as(UpstreamUnavailable, operation=f"a {action}"):
        if action == AuditAction.LOOKUP:
            return [client.external_for(tokens[0])] if single else client.external_for_batch(tokens)
        return [client.internal_for(tokens[0])] if single else client.internal_for_batch(tokens)


def _audit(*, api_key: ApiKey, action: str, entries: Sequence[tuple[str, int | None, str]]) -> None:
    correlation_id = get_correlation_id() or ""
    records = [
        AuditRecord(api_key_id=api_key.pk, action=action, pair_id=pair_id, token_digest=audit_token_digest(token),
                    correlation_id=correlation_id, outcome=outcome)
        for token, pair_id, outcome in entries
    ]
    if len(records) == 1:
        records[0].save(force_insert=True)
    else:
        AuditRecord.objects.bulk_create(records)
