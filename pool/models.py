# mypy: allow-subclassing-any
# (Django ships no type information and the project runs mypy without django-stubs: models.Model is Any.)
"""Pools, their token pairs (the original plan's token_pool table) and the lookup audit."""
from __future__ import annotations

from datetime import timedelta
from typing import cast

from django.conf import settings
from django.db import models
from django.db.models import Q

from common.append_only import AppendOnlyError, AppendOnlyModel
from common.choices import TextChoices
from tome import TOME_BATCH_LIMIT

__all__ = ["Environment", "Pool", "PairStatus", "PairSource", "TokenPair", "PairCounter", "AuditAction",
           "AuditOutcome", "AuditRecord", "AppendOnlyError", "TokenAccessKind", "TokenReveal", "REVEAL_PERMISSION"]

# Showing a pair's full tokens in the admin takes this permission (view permission shows them masked).
REVEAL_PERMISSION = "pool.reveal_tokenpair"


class Environment(TextChoices):
    UAT = "UAT", "UAT"
    PRODUCTION = "PRODUCTION", "Production"


class Pool(models.Model):
    name = models.SlugField(max_length=64, unique=True)
    environment = models.CharField(max_length=16, choices=Environment.choices, default=Environment.UAT)
    ns1_namespace = models.CharField("NS1 namespace", max_length=64, default="ns1")
    ns2_namespace = models.CharField("NS2 namespace", max_length=64, default="ns2")
    target_size = models.PositiveIntegerField(default=10_000)
    low_watermark = models.PositiveIntegerField(default=2_000, help_text="Refill starts below this.")
    critical_watermark = models.PositiveIntegerField(default=500, help_text="Critical alert below this.")
    batch_size = models.PositiveIntegerField(default=1_000, help_text=f"Pairs per TOME call (1–{TOME_BATCH_LIMIT}).")
    refill_interval_minutes = models.PositiveIntegerField(default=60)
    reservation_ttl = models.DurationField(default=timedelta(minutes=15))
    refill_enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "core_pool"
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=Q(target_size__gt=0), name="pool_target_positive"),
            models.CheckConstraint(condition=Q(low_watermark__lt=models.F("target_size")),
                                   name="pool_low_watermark_below_target"),
            models.CheckConstraint(condition=Q(critical_watermark__lte=models.F("low_watermark")),
                                   name="pool_critical_at_or_below_low"),
            models.CheckConstraint(condition=Q(batch_size__gte=1, batch_size__lte=TOME_BATCH_LIMIT),
                                   name="pool_batch_size_within_tome_limit"),
            models.CheckConstraint(condition=Q(refill_interval_minutes__gte=1), name="pool_interval_positive"),
            models.CheckConstraint(condition=Q(reservation_ttl__gt=timedelta(0)), name="pool_ttl_positive"),
        ]

    def __str__(self) -> str:
        return cast(str, self.name)


class PairStatus(TextChoices):
    AVAILABLE = "AVAILABLE"
    RESERVED = "RESERVED"
    USED = "USED"
    RETIRED = "RETIRED"


class PairSource(TextChoices):
    POOL = "pool"
    DIRECT = "direct"


class TokenPair(models.Model):
    """One (internal token, external reference id) pair. Issued at most once, ever.

    The reservation claim (`pool/services/claim.py`) walks ``pair_available_idx``; every other index on
    this table costs on each reservation (a status change is never a HOT update), so keep exactly
    the indexes the hot paths need."""

    pool = models.ForeignKey(Pool, on_delete=models.PROTECT, related_name="pairs", db_index=False)
    # Unique through Meta.constraints, not unique=True: for a unique CharField Django also builds a
    # varchar_pattern_ops "_like" index for LIKE queries that nothing runs (lookups and the admin
    # search are exact), and every index costs on each reservation.
    internal_token = models.CharField(max_length=128)
    external_ref_id = models.CharField(max_length=128)
    status = models.CharField(max_length=16, choices=PairStatus.choices, default=PairStatus.AVAILABLE)
    source = models.CharField(max_length=8, choices=PairSource.choices, default=PairSource.POOL)
    reservation_id = models.UUIDField(null=True, blank=True, unique=True)
    reserved_by = models.ForeignKey("keys.ApiKey", null=True, blank=True, on_delete=models.PROTECT,
                                    related_name="+", db_index=False)
    owner_ref = models.CharField(max_length=128, null=True, blank=True)
    # Idempotency: the key, its position within a batch request and a hash of the request body.
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)
    idempotency_index = models.PositiveIntegerField(null=True, blank=True)
    request_fingerprint = models.CharField(max_length=64, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    reserved_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    used_at = models.DateTimeField(null=True, blank=True)
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "core_tokenpair"
        indexes = [
            # The reservation hot path: next AVAILABLE pair of a pool, in id order.
            models.Index(fields=["pool", "id"], condition=Q(status="AVAILABLE"), name="pair_available_idx"),
            # The expiry sweep: only live leases are indexed, so the index stays tiny.
            models.Index(fields=["expires_at"], condition=Q(status="RESERVED"), name="pair_lease_expiry_idx"),
            # The consumer adoption page (monitoring/adoption.py): each key's first and last card and its
            # last 7 days by status and source, index-only. Issued pairs only (AVAILABLE ones have no
            # key), so a refill's inserts never touch it; a reservation and a confirm add one entry each.
            models.Index(fields=["reserved_by", "reserved_at"], include=["status", "source"],
                         condition=Q(reserved_by__isnull=False), name="pair_consumer_reserved_idx"),
        ]
        permissions = [("reveal_tokenpair", "Can reveal a token pair's full tokens (audited, with a reason)")]
        constraints = [
            # Lookup / detokenize. The names are the ones PostgreSQL gave the original column
            # constraints, so migration 0013 only drops the two "_like" indexes.
            models.UniqueConstraint(fields=["internal_token"], name="core_tokenpair_internal_token_key"),
            models.UniqueConstraint(fields=["external_ref_id"], name="core_tokenpair_external_ref_id_key"),
            models.UniqueConstraint(
                fields=["reserved_by", "idempotency_key", "idempotency_index"],
                condition=Q(idempotency_key__isnull=False), name="pair_idempotency_unique",
            ),
            models.CheckConstraint(
                name="pair_available_is_unissued",
                condition=~Q(status="AVAILABLE") | Q(
                    reservation_id__isnull=True, reserved_by__isnull=True, reserved_at__isnull=True,
                    expires_at__isnull=True, used_at__isnull=True, retired_at__isnull=True,
                    idempotency_key__isnull=True, source="pool",
                ),
            ),
            models.CheckConstraint(
                name="pair_reserved_has_lease",
                condition=~Q(status="RESERVED") | Q(
                    reservation_id__isnull=False, reserved_by__isnull=False, reserved_at__isnull=False,
                    expires_at__isnull=False, used_at__isnull=True, retired_at__isnull=True,
                ),
            ),
            models.CheckConstraint(
                name="pair_used_was_reserved",
                condition=~Q(status="USED") | Q(
                    reservation_id__isnull=False, reserved_at__isnull=False, used_at__isnull=False,
                    retired_at__isnull=True,
                ),
            ),
            models.CheckConstraint(
                name="pair_retired_has_time",
                condition=~Q(status="RETIRED") | Q(retired_at__isnull=False, used_at__isnull=True),
            ),
            models.CheckConstraint(
                name="pair_idempotency_complete",
                condition=Q(idempotency_key__isnull=True, idempotency_index__isnull=True,
                            request_fingerprint__isnull=True)
                | Q(idempotency_key__isnull=False, idempotency_index__isnull=False,
                    request_fingerprint__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"pair #{self.pk} of {self.pool.name} ({self.get_status_display()})"


class PairCounter(models.Model):
    """Pairs per (pool, status, source), kept by PostgreSQL triggers on the pair table (pool migration 0004).

    Never written by Python: statement-level triggers *append* each INSERT/UPDATE/DELETE statement's
    net change as new rows (``shard`` from a sequence, one per statement; pool migration 0006), so no
    reservation waits on another's counter row and none updates a row in place (an old snapshot pins
    nothing on the hot path); the counts commit with the pairs. ``pool/counters.py`` reads them (SUM)
    and folds the appended rows into shard 0. A row's ``n`` may be negative (AVAILABLE -1 on a claim)."""

    pool = models.ForeignKey(Pool, on_delete=models.CASCADE, related_name="+", db_index=False)
    status = models.CharField(max_length=16, choices=PairStatus.choices)
    source = models.CharField(max_length=8, choices=PairSource.choices)
    shard = models.BigIntegerField(help_text="The writing statement's number (a sequence); 0: folded.")
    n = models.BigIntegerField(default=0)

    class Meta:
        db_table = "pool_paircounter"
        constraints = [
            models.UniqueConstraint(fields=["pool", "status", "source", "shard"], name="paircounter_key"),
        ]

    def __str__(self) -> str:
        return f"{self.pool_id} {self.status}/{self.source} shard {self.shard}: {self.n}"


class AuditAction(TextChoices):
    LOOKUP = "lookup"
    DETOKENIZE = "detokenize"


class AuditOutcome(TextChoices):
    FOUND = "found"
    NOT_FOUND = "not_found", "not found"
    TOME = "tome", "resolved by TOME"
    UPSTREAM_UNAVAILABLE = "upstream_unavailable", "TOME unreachable"
    # Need-to-know: the pair exists but was reserved by another consumer; answered as not_found.
    OTHER_CONSUMER = "other_consumer", "refused: another consumer's pair"


class AuditRecord(AppendOnlyModel):
    """One lookup or detokenize (each batch item counts): who asked, for what, with which result.

    PCI DSS asks that detokenization be logged; the token itself is stored only as its HMAC-SHA-256
    digest so the audit table is not a second copy of the mapping. Append-only: the model refuses
    updates and deletes, and a database trigger (migration 0007) refuses them for raw SQL too."""

    api_key = models.ForeignKey("keys.ApiKey", on_delete=models.PROTECT, related_name="+", db_index=False)
    # The key's consumer when it asked (a key's consumer may be changed later in the admin).
    consumer = models.ForeignKey("keys.Consumer", null=True, blank=True, on_delete=models.PROTECT, related_name="+",
                                 db_index=False)
    action = models.CharField(max_length=16, choices=AuditAction.choices)
    pair = models.ForeignKey(TokenPair, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    token_digest = models.CharField(max_length=64,
                                    help_text="HMAC-SHA-256 (hex, keyed by SECRET_KEY) of the token asked about.")
    correlation_id = models.CharField(max_length=128, blank=True, default="")
    outcome = models.CharField(max_length=24, choices=AuditOutcome.choices)
    # Repeated identical misses are aggregated: one row stands for this many answers.
    occurrences = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "core_auditrecord"
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["api_key", "created_at"], name="audit_key_time_idx"),
            models.Index(fields=["token_digest"], name="audit_token_digest_idx"),
        ]

    def __str__(self) -> str:
        return f"audit #{self.pk} {self.action} {self.outcome}"


class TokenAccessKind(TextChoices):
    REVEAL = "reveal", "full tokens revealed"
    SEARCH = "search", "searched by a term"


class TokenReveal(AppendOnlyModel):
    """One staff access to the token mapping in the admin: a reveal of a pair's full tokens (with the
    reason given) or a search by a term (kept as its HMAC-SHA-256 digest, never the raw term).

    Append-only: the model refuses updates and deletes, and a database trigger (pool migration 0002)
    refuses them for raw SQL too."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=8, choices=TokenAccessKind.choices)
    pair = models.ForeignKey(TokenPair, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
                             help_text="The pair revealed (reveals) or the single pair a search matched.")
    term_digest = models.CharField(max_length=64, blank=True, default="",
                                   help_text="HMAC-SHA-256 (hex, keyed by SECRET_KEY) of the search term.")
    matches = models.PositiveIntegerField(null=True, blank=True, help_text="Rows a search matched.")
    reason = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "pool_tokenreveal"
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(
                name="tokenreveal_reveal_has_pair_and_reason",
                condition=~Q(kind="reveal") | (Q(pair__isnull=False) & ~Q(reason="")),
            ),
            models.CheckConstraint(
                name="tokenreveal_search_has_digest",
                condition=~Q(kind="search") | (~Q(term_digest="") & Q(matches__isnull=False)),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} by {self.user} at {self.created_at:%Y-%m-%d %H:%M:%S}"
