"""Admin for refills: the read-only run history, the lease, and "Refill now" on pools.

The Pool admin belongs to the pool room (``pool/admin.py``); ``RefillPoolAdminMixin`` carries
the refill room's part of it and ``monitoring/admin.py`` composes the registered Pool admin from both.
"""
from __future__ import annotations

from django.contrib import admin, messages
from django.utils.html import format_html

from common.admin_mixins import COMPACT_CHANGE_LIST, ReadOnlyAdminMixin, compact_time, cut, wrapped
from refill.models import RefillLease, RefillRun
from refill.services import refill_enqueue_manual


@admin.register(RefillRun)
class RefillRunAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    # Fits a 1400 px window (tests/monitoring/test_browser_admin_lists.py): compact times, the pool name
    # and the error cut to their columns, whole on hover and on the run's page.
    list_display = ("id", "pool_name", "trigger_label", "outcome_badge", "started", "duration", "pairs",
                    "tome_calls", "seconds_split", "error_short")
    change_list_template = COMPACT_CHANGE_LIST
    list_filter = ("outcome", "trigger", "pool", "started_at")
    list_select_related = ("pool",)
    search_fields = ("correlation_id", "error")
    date_hierarchy = "started_at"
    readonly_fields = [f.name for f in RefillRun._meta.fields]  # noqa: SLF001 - Model._meta is Django's documented Options API
    show_full_result_count = False  # the history grows forever; skip the full COUNT(*)

    _COLOURS = {"succeeded": "#2e7d32", "nothing_to_do": "#607d8b", "partial": "#ef6c00",
                "failed": "#c62828", "blocked_onboarding": "#6a1b9a", "skipped_locked": "#607d8b",
                "running": "#1565c0"}

    @admin.display(description="outcome", ordering="outcome")
    def outcome_badge(self, obj: RefillRun) -> str:
        return format_html('<b style="color:{};white-space:normal">{}</b>', self._COLOURS.get(obj.outcome, "inherit"),
                           obj.get_outcome_display())

    @admin.display(description="pool", ordering="pool__name")
    def pool_name(self, obj: RefillRun) -> str:
        return cut(obj.pool.name, em=8)

    @admin.display(description="started", ordering="started_at")
    def started(self, obj: RefillRun) -> str:
        return compact_time(obj.started_at)

    @admin.display(description="trigger", ordering="trigger")
    def trigger_label(self, obj: RefillRun) -> str:
        return format_html('<span style="white-space:normal">{}</span>', obj.get_trigger_display())

    @admin.display(description="inserted of requested", ordering="inserted")
    def pairs(self, obj: RefillRun) -> str:
        return f"{obj.inserted} of {obj.requested}"

    @admin.display(description="TOME / DB s")
    def seconds_split(self, obj: RefillRun) -> str:
        return f"{obj.tome_seconds:.2f} / {obj.db_seconds:.2f}"

    @admin.display(description="duration")
    def duration(self, obj: RefillRun) -> str:
        if obj.finished_at is None:
            return "running"
        return f"{(obj.finished_at - obj.started_at).total_seconds():.1f} s"

    @admin.display(description="error")
    def error_short(self, obj: RefillRun) -> str:
        return wrapped(obj.error, chars=120) if obj.error else ""


@admin.register(RefillLease)
class RefillLeaseAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("pool", "state", "acquired_at", "expires_at", "task_id")
    readonly_fields = ("pool", "token", "state", "acquired_at", "expires_at", "task_id")

    def has_delete_permission(self, request, obj=None) -> bool:
        # Deleting a lease by hand is safe (it only lets the next trigger enqueue again) and is the
        # operator's way out if an expiry was configured far too long.
        return request.user.has_perm("refill.delete_refilllease")


@admin.action(description="Refill now (queue a manual refill)", permissions=["change"])
def refill_now(modeladmin, request, queryset) -> None:
    for pool in queryset:
        task_id = refill_enqueue_manual(pool=pool)
        modeladmin.message_user(
            request, f"Refill of pool “{pool.name}” queued (task {task_id}); its outcome appears under "
                     f"Refill runs once a qcluster worker has run it.",
            messages.SUCCESS,
        )


class RefillPoolAdminMixin:
    """The refill room's part of the Pool admin (composed in ``monitoring/admin.py``)."""

    actions = [refill_now]
