"""The naive peer's tables, as raw SQL run by whoever benchmarks it (no Django settings needed).

Each run gets its own PostgreSQL schema (``naive_peer_<hex>``), so two runs on one database never
collide and dropping the schema removes everything. The peer finds its tables through
``search_path`` (``NAIVE_PEER_SCHEMA``, see settings.py).

A run owns its schema through a session-level advisory lock held on a connection of its own for
as long as the schema exists (:func:`owned_schema`); a run that was SIGKILLed leaves its schema
behind, but its connection closes with it and PostgreSQL releases the lock. So a schema whose lock
can be taken has no live owner, and :func:`drop_orphans` drops it when the next run starts.

``pairs`` is slim and carries exactly four indexes: the primary key, the two unique tokens, and a
partial index on ``(pool, id) WHERE status = 'AVAILABLE'`` for the claim's pick.
"""
from __future__ import annotations

import hashlib
import os
import re
import secrets
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg

ROOT = Path(__file__).resolve().parents[2]
SETTINGS_MODULE = "bench.naive_peer.settings"
_SCHEMA_NAME = re.compile(r"^naive_peer_[0-9a-f]{6,32}$")
# First key of the two-key advisory lock that marks a schema as owned (ASCII "napr"; refill's is
# "refl"); the second is hashtext(schema name).
OWNER_LOCK_CLASS = 0x6E617072

_CREATE = """
CREATE SCHEMA {schema};
CREATE TABLE {schema}.api_keys (
    id bigserial PRIMARY KEY,
    name varchar(100) NOT NULL,
    key_hash char(64) NOT NULL UNIQUE,
    revoked boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE {schema}.pairs (
    id bigserial PRIMARY KEY,
    pool varchar(64) NOT NULL,
    internal_token varchar(64) NOT NULL UNIQUE,
    external_ref_id varchar(128) NOT NULL UNIQUE,
    status varchar(16) NOT NULL DEFAULT 'AVAILABLE',
    reservation_id uuid,
    reserved_by_id bigint REFERENCES {schema}.api_keys (id),
    reserved_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pairs_available_idx ON {schema}.pairs (pool, id) WHERE status = 'AVAILABLE';
"""


def new_schema_name() -> str:
    return f"naive_peer_{secrets.token_hex(4)}"


def _checked(schema: str) -> str:
    # The name is interpolated into DDL, so it must be one of ours.
    if not _SCHEMA_NAME.match(schema):
        raise ValueError(f"not a naive peer schema name: {schema!r}")
    return schema


def create_schema(cursor: Any, *, schema: str) -> None:
    """Create the schema and its two tables (fails if the schema exists)."""
    cursor.execute(_CREATE.format(schema=_checked(schema)))


def drop_schema(cursor: Any, *, schema: str) -> None:
    cursor.execute(f"DROP SCHEMA IF EXISTS {_checked(schema)} CASCADE")


def _try_lock(conn: psycopg.Connection, schema: str) -> bool:
    return conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))", [OWNER_LOCK_CLASS, schema]).fetchone()[0]


def drop_orphans(conn: psycopg.Connection) -> list[str]:
    """Drop every ``naive_peer_*`` schema no live run owns, and return their names.

    Safe because an owner takes its lock before it creates the schema and drops the schema before
    it lets go (:func:`owned_schema`), and PostgreSQL holds a session's advisory lock exactly as
    long as the session lives, on whatever machine its client runs (a pid would say nothing about
    another machine's run, and pids are reused). Call it on a session that owns no schema yet:
    its own locks would be granted to it again."""
    dropped = []
    names = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'naive\\_peer\\_%'").fetchall()
    for (name,) in names:
        if _SCHEMA_NAME.match(name) and _try_lock(conn, name):
            try:
                conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
                dropped.append(name)
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", [OWNER_LOCK_CLASS, name])
    return dropped


@contextmanager
def owned_schema(*, database_url: str, on_orphans: Callable[[list[str]], None] | None = None) -> Iterator[str]:
    """A new peer schema (tables created) owned by this run, dropped on the way out; the orphans of
    killed runs are dropped first (``on_orphans`` gets their names when there were any)."""
    with psycopg.connect(database_url, autocommit=True) as owner:
        dropped = drop_orphans(owner)
        if dropped and on_orphans is not None:
            on_orphans(dropped)
        name = new_schema_name()
        if not _try_lock(owner, name):  # 32 random bits, or a hashtext collision: take another
            name = new_schema_name()
            if not _try_lock(owner, name):
                raise RuntimeError("could not take a naive peer schema's owner lock")
        with owner.cursor() as cursor:
            create_schema(cursor, schema=name)
        try:
            yield name
        finally:
            # Dropped before the lock goes (it goes with the session): never an unowned live schema.
            owner.execute(f"DROP SCHEMA IF EXISTS {_checked(name)} CASCADE")


def create_api_key(cursor: Any, *, schema: str, name: str = "bench") -> str:
    """Store a new key's sha256 and return the raw key (shown once, never logged)."""
    raw = secrets.token_urlsafe(32)
    cursor.execute(f"INSERT INTO {_checked(schema)}.api_keys (name, key_hash) VALUES (%s, %s)",
                   [name, hashlib.sha256(raw.encode()).hexdigest()])
    return raw


def fill_pairs(cursor: Any, *, schema: str, pool: str, count: int) -> None:
    """Append ``count`` AVAILABLE pairs to ``pool`` in one INSERT … SELECT generate_series, then
    VACUUM ANALYZE (as TokenPool's scratch pools get). VACUUM needs autocommit: call it outside a
    transaction."""
    tag = secrets.token_hex(4)
    cursor.execute(
        f"INSERT INTO {_checked(schema)}.pairs (pool, internal_token, external_ref_id, status) "
        "SELECT %s, 'ntk_' || %s || '_' || g, 'ext_peer_' || %s || '_' || g, 'AVAILABLE' "
        "FROM generate_series(1, %s) AS g", [pool, tag, tag, count])
    cursor.execute(f"VACUUM ANALYZE {schema}.pairs")


def count_pairs(cursor: Any, *, schema: str, status: str) -> int:
    cursor.execute(f"SELECT count(*) FROM {_checked(schema)}.pairs WHERE status = %s", [status])
    return cursor.fetchone()[0]


def database_url(settings_dict: dict[str, Any]) -> str:
    """A ``postgresql://`` URL for a Django ``DATABASES`` entry (host may be a unix socket dir),
    so the peer connects to exactly the database the caller uses (a test database too)."""
    user = quote(settings_dict.get("USER") or "", safe="")
    password = quote(settings_dict.get("PASSWORD") or "", safe="")
    credentials = f"{user}:{password}@" if user or password else ""
    host = str(settings_dict.get("HOST") or "")
    port = str(settings_dict.get("PORT") or "")
    name = quote(settings_dict["NAME"], safe="")
    if host.startswith("/"):
        query = f"?host={quote(host, safe='')}" + (f"&port={port}" if port else "")
        return f"postgresql://{credentials}/{name}{query}"
    return f"postgresql://{credentials}{host}{':' + port if port else ''}/{name}"


def gunicorn_command(*, port: int, workers: int = 2, threads: int = 4) -> list[str]:
    """Stock gunicorn gthread, as a team would run it (no TokenPool worker class)."""
    return [sys.executable, "-m", "gunicorn", "bench.naive_peer.wsgi:application", "--worker-class", "gthread",
            "--workers", str(workers), "--threads", str(threads), "--bind", f"127.0.0.1:{port}",
            "--log-level", "warning",
            # gunicorn 27's control socket defaults to one path per user, shared by every gunicorn on
            # the machine (TokenPool's runner turns it off too); nothing here uses it.
            "--no-control-socket"]


def gunicorn_env(*, database_url: str, schema: str, base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env.update({"DJANGO_SETTINGS_MODULE": SETTINGS_MODULE, "NAIVE_PEER_DATABASE_URL": database_url,
                "NAIVE_PEER_SCHEMA": _checked(schema)})
    return env
