"""Admin building blocks shared by the rooms' admin modules."""
from __future__ import annotations

from datetime import datetime

from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html


class ReadOnlyAdminMixin:
    """Rows written only by services (history, audit, snapshots): staff may view them, never add,
    edit or delete them by hand. View permission is left to Django's own check.

    Mix in front of ``admin.ModelAdmin`` or an inline; ``obj`` is optional because ModelAdmin's
    ``has_add_permission`` takes no object while an inline's does."""

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


def compact_time(value: datetime | None, *, label: str = "") -> str:
    """A timestamp in a list column: ``2026-12-03`` over ``12:18`` (local time), "—" for none; about a
    third of the width of Django's "Dec. 3, 2026, 12:18 p.m.", which wide lists cannot afford."""
    if value is None:
        return "—"
    local = timezone.localtime(value)
    return format_html("{}{}<br>{}", f"{label} " if label else "", f"{local:%Y-%m-%d}", f"{local:%H:%M}")


def cut(text: object, *, em: float) -> str:
    """``text`` in at most ``em`` ems of a list column, cut with an ellipsis, the whole of it on hover
    (templates/admin/compact_change_list.html styles ``cl-cut``)."""
    text = str(text)
    return format_html('<span class="cl-cut" style="max-width:{}em" title="{}">{}</span>', em, text, text)


def wrapped(text: object, *, chars: int) -> str:
    """A long free-text value (an error) wrapped within its column, cut after ``chars`` characters, whole
    on hover."""
    text = str(text)
    shown = text if len(text) <= chars else text[:chars].rstrip() + "…"
    return format_html('<span class="cl-wrap" title="{}">{}</span>', text, shown)


COMPACT_CHANGE_LIST = "admin/compact_change_list.html"
