"""Pair rows returned by the pool's hand-written SQL, as model instances."""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from django.db import connection

from pool.models import TokenPair

PAIR_FIELDS: tuple[str, ...] = tuple(f.attname for f in TokenPair._meta.concrete_fields)  # noqa: SLF001 - Model._meta is Django's documented Options API
# Appended to every `RETURNING`: the pair's columns and its pool's name (the reservation body has it).
RETURNING = ", ".join(f"t.{name}" for name in PAIR_FIELDS) + (
    ", (SELECT p.name FROM core_pool AS p WHERE p.id = t.pool_id) AS pool_name"
)


def pairs_from_rows(rows: Sequence[Sequence[object]], *, leading: int = 0) -> list[TokenPair]:
    """Model instances from `RETURNING [lead columns,] <pair columns>, pool_name` rows."""
    pairs = []
    n = len(PAIR_FIELDS)
    for row in rows:
        pair = TokenPair.from_db("default", PAIR_FIELDS, row[leading:leading + n])
        pair.pool_name = row[leading + n]
        pairs.append(pair)
    return pairs


def fetch(sql: str, params: dict[str, object]) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cast(list[tuple[Any, ...]], cursor.fetchall())


def execute(sql: str, params: dict[str, object]) -> int:
    """Run a statement; returns its row count."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cast(int, cursor.rowcount)


def db_now() -> datetime:
    return cast(datetime, fetch("SELECT now()", {})[0][0])
