"""Audited staff access to the token mapping (contract section 3, admin): reveals and searches.

The admin shows internal tokens and external references masked (``mask_token``). Showing a pair's
full tokens takes ``pool.reveal_tokenpair`` and a reason, and writes a ``TokenReveal`` row in the same
transaction as the read; a search by a term is recorded as the term's keyed digest (never the raw
term), with how many rows it matched."""
from __future__ import annotations

from typing import Any

from django.db import transaction

from common.errors import DomainRuleViolation, PermissionDenied
from pool.models import REVEAL_PERMISSION, TokenAccessKind, TokenPair, TokenReveal
from pool.services.lookups import audit_token_digest

MASK = "••••"
VISIBLE_CHARACTERS = 4
MIN_REASON_LENGTH = 10
SEARCH_MATCH_CAP = 10_000  # an audit search counts its matches up to this (never the whole table)


def mask_token(value: str | None) -> str:
    """At most the last four characters of ``value``, behind a fixed-width mask (never its length)."""
    if not value:
        return ""
    return MASK + (value[-VISIBLE_CHARACTERS:] if len(value) > VISIBLE_CHARACTERS * 2 else "")


def pair_reveal(*, pair_id: int, user: Any, reason: str) -> TokenPair:
    """The pair with its full tokens, after checking the reveal permission and the reason and
    recording who revealed which pair, when and why. Raises ``PermissionDenied`` without the
    permission, ``DomainRuleViolation`` for a missing or too short reason, ``TokenPair.DoesNotExist``
    for an unknown pair."""
    if not (user and user.is_active and user.has_perm(REVEAL_PERMISSION)):
        raise PermissionDenied("Revealing a token pair needs the “reveal token pair” permission.")
    reason = (reason or "").strip()
    if len(reason) < MIN_REASON_LENGTH:
        raise DomainRuleViolation(f"Say why the full tokens are needed (at least {MIN_REASON_LENGTH} characters).")
    with transaction.atomic():
        pair = TokenPair.objects.get(pk=pair_id)
        TokenReveal.objects.create(user=user, kind=TokenAccessKind.REVEAL, pair=pair, reason=reason)
    return pair


def pair_search_record(*, user: Any, term: str, matched: list[int], matches: int | None = None) -> TokenReveal:
    """Record an admin search by ``term`` (its digest only): the pairs it matched (``matched``: ids;
    the pair is named when exactly one), or for other tables only how many rows (``matches``)."""
    return TokenReveal.objects.create(
        user=user, kind=TokenAccessKind.SEARCH, term_digest=audit_token_digest(term),
        matches=len(matched) if matches is None else matches, pair_id=matched[0] if len(matched) == 1 else None,
    )
