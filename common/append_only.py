# mypy: allow-subclassing-any
# (Django ships no type information and the project runs mypy without django-stubs: models.Model is Any.)
"""The one append-only model base (audit records, onboarding decisions and transitions): rows are
written once and never changed or deleted. The model refuses it here; each table's database
trigger refuses it for raw SQL too."""
from __future__ import annotations

from typing import Any

from django.db import models


class AppendOnlyError(PermissionError):
    """An attempt to change or delete an append-only row."""


class AppendOnlyQuerySet(models.QuerySet):
    def update(self, **kwargs: Any) -> int:
        raise AppendOnlyError(f"{self.model.__name__} rows are append-only")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise AppendOnlyError(f"{self.model.__name__} rows are append-only")


class AppendOnlyModel(models.Model):
    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AppendOnlyError(f"{type(self).__name__} rows are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise AppendOnlyError(f"{type(self).__name__} rows are append-only")
