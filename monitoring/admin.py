"""Admin of the monitoring room: alerts (acknowledge), snapshots and the pool-config audit (read-only).
Its part of the Pool admin (validation and audit) is ``pool_config.PoolConfigAdminMixin``, composed
into the registered Pool admin here: monitoring is the highest runtime app, so it may compose the pool's
admin from pool's base and refill's "Refill now" without any app patching another's admin."""
from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from common.admin_mixins import COMPACT_CHANGE_LIST, ReadOnlyAdminMixin, compact_time, cut
from monitoring.models import PoolAlert, PoolConfigChange, PoolSnapshot
from monitoring.pool_config import PoolConfigAdminMixin
from monitoring.services import alert_acknowledge
from pool.admin import PoolAdminBase
from pool.models import Pool
from refill.admin import RefillPoolAdminMixin


class AlertStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("open", "open"), ("unacknowledged", "open, not acknowledged"), ("resolved", "resolved")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "open":
            return queryset.filter(resolved_at__isnull=True)
        if self.value() == "unacknowledged":
            return queryset.filter(resolved_at__isnull=True, acknowledged_at__isnull=True)
        if self.value() == "resolved":
            return queryset.filter(resolved_at__isnull=False)
        return queryset


@admin.action(description="Acknowledge selected alerts", permissions=["change"])
def acknowledge(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> None:
    done = sum(alert_acknowledge(alert=alert, user=request.user) for alert in queryset)
    modeladmin.message_user(request, f"{done} alert(s) acknowledged.", messages.SUCCESS)


@admin.register(PoolAlert)
class PoolAlertAdmin(admin.ModelAdmin):
    # Fits a 1400 px window (tests/monitoring/test_browser_admin_lists.py): compact times, names cut.
    list_display = ("condition_label", "pool_name", "severity_badge", "state", "opened", "resolved",
                    "acknowledged", "notified")
    change_list_template = COMPACT_CHANGE_LIST
    list_filter = (AlertStateFilter, "severity", "condition", "pool")
    list_select_related = ("pool", "acknowledged_by")
    date_hierarchy = "opened_at"
    actions = [acknowledge]
    readonly_fields = ("pool", "condition", "severity", "opened_at", "resolved_at", "acknowledged_by",
                       "acknowledged_at", "last_notified_at", "details")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # the alert history is the incident record

    def changeform_view(self, request: HttpRequest, object_id: str | None = None, form_url: str = "",
                        extra_context: dict | None = None):  # noqa: ANN201
        # Every field is read-only: acknowledging is the one change, done with the list action.
        extra_context = {**(extra_context or {}), "show_save": False, "show_save_and_continue": False,
                         "show_save_and_add_another": False}
        return super().changeform_view(request, object_id, form_url, extra_context)

    @admin.display(description="condition", ordering="condition")
    def condition_label(self, obj: PoolAlert) -> str:
        return obj.get_condition_display()

    @admin.display(description="pool", ordering="pool__name")
    def pool_name(self, obj: PoolAlert) -> str:
        return cut(obj.pool.name, em=9)

    @admin.display(description="opened", ordering="opened_at")
    def opened(self, obj: PoolAlert) -> str:
        return compact_time(obj.opened_at)

    @admin.display(description="resolved", ordering="resolved_at")
    def resolved(self, obj: PoolAlert) -> str:
        return compact_time(obj.resolved_at)

    @admin.display(description="acknowledged", ordering="acknowledged_at")
    def acknowledged(self, obj: PoolAlert) -> str:
        if obj.acknowledged_at is None:
            return "—"
        who = obj.acknowledged_by.get_username() if obj.acknowledged_by else "?"
        return format_html("{}<br>{}", cut(who, em=9), compact_time(obj.acknowledged_at))

    @admin.display(description="last notified", ordering="last_notified_at")
    def notified(self, obj: PoolAlert) -> str:
        return compact_time(obj.last_notified_at)

    @admin.display(description="severity", ordering="severity")
    def severity_badge(self, obj: PoolAlert) -> str:
        color = "#b42318" if obj.severity == "critical" else "#9c5b00"
        return format_html('<strong style="color:{}">{}</strong>', color, obj.severity)

    @admin.display(description="state")
    def state(self, obj: PoolAlert) -> str:
        if obj.resolved_at:
            return "resolved"
        return "open, acknowledged" if obj.acknowledged_at else "open"


@admin.register(PoolSnapshot)
class PoolSnapshotAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("pool", "taken_at", "available", "reserved", "used", "retired", "reserved_total",
                    "reserved_direct", "tome_calls_total")
    list_filter = ("pool",)
    date_hierarchy = "taken_at"
    list_select_related = ("pool",)


@admin.register(PoolConfigChange)
class PoolConfigChangeAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("changed_at", "pool", "field", "old", "new", "changed_by")
    list_filter = ("pool", "field")
    search_fields = ("field", "changed_by__username")
    list_select_related = ("pool", "changed_by")


@admin.register(Pool)
class PoolAdmin(PoolConfigAdminMixin, RefillPoolAdminMixin, PoolAdminBase):
    """The pool's own admin, plus refill's "Refill now" and monitoring's validation and audit."""
