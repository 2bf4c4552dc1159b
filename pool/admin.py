"""Admin of the pool room: pools (editable tunables), pairs, audit records and token reveals (read-only).

Tokens are masked on every pair page; the reveal page (``pool.reveal_tokenpair`` and a reason) shows
them in full and records it, as every search by a term is recorded (``pool/services/reveals.py``).

The pair table grows to tens of millions of rows, so its changelist never counts the table
(`show_full_result_count = False`, a paginator that uses the planner's estimate or a capped
count) and searches by exact token through the unique indexes (Django's `=` search would be
`UPPER(...) = UPPER(...)`, a full scan). ``PoolAdminBase`` holds the pool's own concerns; the
registered Pool admin is composed in ``monitoring/admin.py`` from it and the mixins of the rooms above
(refill's "Refill now", monitoring's validation and audit), so pool never imports them."""
from __future__ import annotations

import uuid

from django import forms
from django.contrib import admin
from django.contrib.admin import ShowFacets
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import Count, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.functional import cached_property

from common.admin_mixins import COMPACT_CHANGE_LIST, ReadOnlyAdminMixin, compact_time, cut
from common.errors import DomainRuleViolation
from pool.models import REVEAL_PERMISSION, AuditRecord, PairStatus, Pool, TokenPair, TokenReveal
from pool.services import audit_token_digest
from pool.services.reveals import (
    MIN_REASON_LENGTH,
    SEARCH_MATCH_CAP,
    mask_token,
    pair_reveal,
    pair_search_record,
)

# Above this, a filtered changelist shows "10,000+"-style paging instead of an exact count.
COUNT_CAP = 10_000


class EstimatedCountPaginator(Paginator):
    """Unfiltered: the planner's row estimate (pg_class.reltuples). Filtered: a count capped at
    COUNT_CAP, i.e. `SELECT count(*) FROM (... LIMIT 10000)`, which stops early."""

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if isinstance(queryset, QuerySet) and not queryset.query.where:
            with connection.cursor() as cursor:
                cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                               [queryset.model._meta.db_table])  # noqa: SLF001 - Model._meta is Django's documented Options API
                row = cursor.fetchone()
            if row and row[0] > COUNT_CAP:
                return int(row[0])
        if isinstance(queryset, QuerySet):
            return queryset.order_by()[:COUNT_CAP].count()
        return len(queryset)


class PoolAdminBase(admin.ModelAdmin):
    """Registered by ``monitoring/admin.py`` (composed with the other rooms' mixins), not here."""

    # Short, combined columns: the whole row (refill state included) fits a 1400 px window beside the
    # admin's navigation and filter sidebars.
    list_display = ("name", "environment", "available", "target_size", "watermarks", "batch_size", "refill", "lease")
    list_filter = ("environment", "refill_enabled")
    search_fields = ("name",)
    readonly_fields = ("created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("name", "environment", "ns1_namespace", "ns2_namespace")}),
        ("Size and refill", {"fields": ("target_size", "low_watermark", "critical_watermark", "batch_size",
                                        "refill_interval_minutes", "refill_enabled")}),
        ("Reservations", {"fields": ("reservation_ttl",)}),
        ("History", {"fields": ("created_at", "updated_at")}),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        # Counted over the partial AVAILABLE index only: small whatever the table's size.
        available = (TokenPair.objects.filter(pool=OuterRef("pk"), status=PairStatus.AVAILABLE)
                     .order_by().values("pool").annotate(n=Count("*")).values("n"))
        return super().get_queryset(request).annotate(available_count=Coalesce(Subquery(available), 0))

    @admin.display(description="available", ordering="available_count")
    def available(self, obj: Pool) -> int:
        return obj.available_count

    @admin.display(description="low / critical", ordering="low_watermark")
    def watermarks(self, obj: Pool) -> str:
        return f"{obj.low_watermark} / {obj.critical_watermark}"

    @admin.display(description="refill", ordering="refill_enabled")
    def refill(self, obj: Pool) -> str:
        return f"every {obj.refill_interval_minutes} min" if obj.refill_enabled else "off"

    @admin.display(description="lease", ordering="reservation_ttl")
    def lease(self, obj: Pool) -> str:
        minutes, seconds = divmod(int(obj.reservation_ttl.total_seconds()), 60)
        return f"{minutes} min" if not seconds else f"{minutes} min {seconds} s"

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # pairs reference their pool (PROTECT); pools are retired by disabling refill


class RevealReasonForm(forms.Form):
    reason = forms.CharField(
        label="Reason (required: ticket or case, and why the full tokens are needed)",
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80}), min_length=MIN_REASON_LENGTH, max_length=2000,
    )


# The detail page: every field, the two tokens masked (the full values only through the reveal page).
_MASKED = {"internal_token": "internal_token_masked", "external_ref_id": "external_ref_id_masked"}
_PAIR_FIELDS = [_MASKED.get(f.name, f.name) for f in TokenPair._meta.fields]  # noqa: SLF001 - Model._meta is Django's documented Options API


@admin.register(TokenPair)
class TokenPairAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Pairs, read-only, tokens masked everywhere (list, detail, search results). The full tokens take
    ``pool.reveal_tokenpair`` and a reason on the reveal page; reveals and searches are audited
    (``TokenReveal``, listed by its own admin)."""

    # Fits a 1400 px window (tests/monitoring/test_browser_admin_lists.py): the reservation id and names
    # cut (whole on hover), the four timestamps as two compact columns; everything on the pair's page.
    list_display = ("id", "pool_name", "status", "source", "internal_token_masked", "external_ref_id_masked",
                    "reservation_short", "reserved_by_name", "reserved", "ends")
    change_list_template = COMPACT_CHANGE_LIST
    list_filter = ("status", "source", "pool")
    list_select_related = ("pool", "reserved_by")
    search_fields = ("internal_token",)  # see get_search_results: exact, index-backed, audited
    search_help_text = "Exact internal token, external reference id or reservation id (searches are audited)."
    ordering = ("-id",)
    show_full_result_count = False
    show_facets = ShowFacets.NEVER  # facet counts would scan the table
    paginator = EstimatedCountPaginator
    list_per_page = 50
    fields = readonly_fields = _PAIR_FIELDS
    change_form_template = "admin/pool/tokenpair/change_form.html"

    @admin.display(description="pool", ordering="pool__name")
    def pool_name(self, obj: TokenPair) -> str:
        return cut(obj.pool.name, em=9)

    @admin.display(description="reservation", ordering="reservation_id")
    def reservation_short(self, obj: TokenPair) -> str:
        return cut(obj.reservation_id, em=6) if obj.reservation_id else "—"

    @admin.display(description="reserved by", ordering="reserved_by__name")
    def reserved_by_name(self, obj: TokenPair) -> str:
        return cut(obj.reserved_by.name, em=11) if obj.reserved_by else "—"

    @admin.display(description="reserved", ordering="reserved_at")
    def reserved(self, obj: TokenPair) -> str:
        return compact_time(obj.reserved_at)

    @admin.display(description="used / retired / expires")
    def ends(self, obj: TokenPair) -> str:
        """What ends (or will end) the pair's reservation: used, retired, or the lease's expiry."""
        for label, value in (("used", obj.used_at), ("retired", obj.retired_at), ("expires", obj.expires_at)):
            if value is not None:
                return compact_time(value, label=label)
        return "—"

    @admin.display(description="internal token")
    def internal_token_masked(self, obj: TokenPair) -> str:
        return mask_token(obj.internal_token)

    @admin.display(description="external ref id")
    def external_ref_id_masked(self, obj: TokenPair) -> str:
        return mask_token(obj.external_ref_id)

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        match = Q(internal_token=term) | Q(external_ref_id=term)
        try:
            match |= Q(reservation_id=uuid.UUID(term))
        except ValueError:
            pass
        results = queryset.filter(match)
        pair_search_record(user=request.user, term=term, matched=list(results.values_list("id", flat=True)[:2]))
        return results, False

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict | None = None) -> HttpResponse:
        extra = {"can_reveal": request.user.has_perm(REVEAL_PERMISSION), **(extra_context or {})}
        return super().change_view(request, object_id, form_url, extra_context=extra)

    def get_urls(self) -> list:
        reveal = self.admin_site.admin_view(self.reveal_view)
        return [path("<int:pair_id>/reveal/", reveal, name="pool_tokenpair_reveal"), *super().get_urls()]

    def reveal_view(self, request: HttpRequest, pair_id: int) -> HttpResponse:
        """GET: the reason form (masked values). POST with a reason: the full tokens, audited."""
        if not request.user.has_perm(REVEAL_PERMISSION):
            raise DjangoPermissionDenied
        pair = get_object_or_404(TokenPair.objects.select_related("pool"), pk=pair_id)
        form = RevealReasonForm(request.POST or None)
        revealed = None
        if request.method == "POST" and form.is_valid():
            try:
                revealed = pair_reveal(pair_id=pair.pk, user=request.user, reason=form.cleaned_data["reason"])
            except DomainRuleViolation as exc:
                form.add_error("reason", exc.detail)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Reveal the tokens of {pair}", "opts": self.opts, "pair": pair, "form": form,
            "masked": {"internal_token": mask_token(pair.internal_token),
                       "external_ref_id": mask_token(pair.external_ref_id)},
            "revealed": revealed,
        }
        response = TemplateResponse(request, "admin/pool/tokenpair/reveal.html", context)
        response["Cache-Control"] = "no-store"  # the full tokens must not stay in a browser or proxy cache
        return response


@admin.register(TokenReveal)
class TokenRevealAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The audit view of staff access to the mapping: every reveal (who, when, which pair, why) and
    every search (who, when, the term's digest, how many rows matched)."""

    list_display = ("id", "created_at", "user", "kind", "pair", "matches", "reason", "term_digest")
    list_filter = ("kind",)
    list_select_related = ("user", "pair")
    search_fields = ("user__username",)
    search_help_text = "A username, or a search term (matched by its HMAC-SHA-256 digest)."
    ordering = ("-id",)
    readonly_fields = [f.name for f in TokenReveal._meta.fields]  # noqa: SLF001 - Model._meta is Django's documented Options API

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        return queryset.filter(Q(user__username=term) | Q(term_digest=audit_token_digest(term))), False


@admin.register(AuditRecord)
class AuditRecordAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("id", "created_at", "api_key", "action", "outcome", "pair", "correlation_id")
    list_filter = ("action", "outcome")
    list_select_related = ("api_key",)
    search_fields = ("correlation_id",)
    search_help_text = "A token (matched by its HMAC-SHA-256 digest) or an exact correlation id."
    ordering = ("-id",)
    show_full_result_count = False
    show_facets = ShowFacets.NEVER
    paginator = EstimatedCountPaginator
    readonly_fields = [f.name for f in AuditRecord._meta.fields]  # noqa: SLF001 - Model._meta is Django's documented Options API

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        digest = audit_token_digest(term)
        results = queryset.filter(Q(token_digest=digest) | Q(token_digest=term) | Q(correlation_id=term))
        # Who looked up a token is itself need-to-know: recorded like a pair search (digest, match count).
        pair_search_record(user=request.user, term=term, matched=[],
                           matches=results.order_by()[:SEARCH_MATCH_CAP].count())
        return results, False
