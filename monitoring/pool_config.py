"""Validation and audit of pool tunables edited in the admin.

``PoolConfigForm`` turns every rule the database enforces with a check constraint into a friendly
field error (the admin must never answer a bad edit with a 500), and ``PoolConfigAdminMixin``
records each changed tunable as a ``PoolConfigChange`` in the same transaction as the edit.
The Pool admin itself belongs to the pool room; ``monitoring/admin.py`` composes it with this mixin.
"""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import forms
from django.conf import settings
from django.http import HttpRequest

from monitoring.services import AUDITED_POOL_FIELDS, pool_config_changes_record
from pool.models import Pool
from tome import TOME_BATCH_LIMIT


def max_batch_size() -> int:
    """TOME's batch limit as configured, never above what the database allows."""
    return min(TOME_BATCH_LIMIT, settings.TOME_MAX_BATCH)


class PoolConfigForm(forms.ModelForm):
    class Meta:
        model = Pool
        fields = "__all__"

    def _value(self, name: str) -> Any:
        # A field left out of the admin's form keeps the stored value; validate against that.
        if name in self.fields:
            return self.cleaned_data.get(name)
        return getattr(self.instance, name, None)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        target = self._value("target_size")
        low = self._value("low_watermark")
        critical = self._value("critical_watermark")
        batch = self._value("batch_size")
        interval = self._value("refill_interval_minutes")
        ttl = self._value("reservation_ttl")

        def error(field: str, message: str) -> None:
            if field in self.fields:
                self.add_error(field, message)
            else:
                self.add_error(None, f"{Pool._meta.get_field(field).verbose_name}: {message}")  # noqa: SLF001 - Model._meta is Django's documented Options API

        if target is not None and target <= 0:
            error("target_size", "The target size must be at least 1.")
        if low is not None and target is not None and low >= target:
            error("low_watermark", f"The low watermark must be below the target size ({target:,}).")
        if critical is not None and low is not None and critical > low:
            error("critical_watermark", f"The critical watermark must not exceed the low watermark ({low:,}).")
        limit = max_batch_size()
        if batch is not None and not 1 <= batch <= limit:
            error("batch_size", f"The batch size must be between 1 and {limit:,} (TOME's batch limit).")
        if interval is not None and interval < 1:
            error("refill_interval_minutes", "The refill interval must be at least 1 minute.")
        if ttl is not None and ttl <= timedelta(0):
            error("reservation_ttl", "The reservation lease must be longer than zero.")
        return cleaned


class PoolConfigAdminMixin:
    """The monitoring room's part of the Pool admin: friendly validation plus the change audit."""

    form = PoolConfigForm

    def save_model(self, request: HttpRequest, obj: Pool, form: forms.ModelForm, change: bool) -> None:
        old = {name: form.initial.get(name) for name in AUDITED_POOL_FIELDS} if change else {}
        super().save_model(request, obj, form, change)  # type: ignore[misc]
        new = {name: getattr(obj, name) for name in AUDITED_POOL_FIELDS}
        # Inside the admin's transaction: the edit and its audit rows commit or roll back together.
        pool_config_changes_record(pool=obj, user=request.user if request.user.is_authenticated else None,
                                   old=old, new=new)
