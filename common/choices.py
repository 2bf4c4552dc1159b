"""``TextChoices`` with types mypy can read.

Django ships no type information (this project runs mypy without django-stubs), so to mypy
``models.TextChoices`` is ``Any``: members like ``PairStatus.USED = "USED", "Used"`` read as tuples
and the classes are not iterable. At runtime this *is* ``django.db.models.TextChoices``; only the
type checker sees the small ``str`` enum below, which describes the part of Django's API we use.
"""
from __future__ import annotations

import enum
from typing import TYPE_CHECKING, ClassVar

from django.db import models

__all__ = ["TextChoices"]

if TYPE_CHECKING:
    class TextChoices(enum.StrEnum):
        """Django's ``models.TextChoices`` as the type checker sees it (a ``str`` enum)."""

        choices: ClassVar[list[tuple[str, str]]]
        values: ClassVar[list[str]]
        labels: ClassVar[list[str]]
        names: ClassVar[list[str]]

        @property
        def label(self) -> str: ...
else:
    TextChoices = models.TextChoices
