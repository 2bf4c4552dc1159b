"""Admin building blocks shared by the rooms' admin modules."""
from __future__ import annotations

from django.http import HttpRequest


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
