"""The emulator's persistent vault: namespaces, token mappings and generate idempotency in PostgreSQL.

Uniqueness is the database's job: (namespace, token) and (namespace, value_digest) are unique
constraints, and every write is one bulk ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` so a
5,000-item batch costs a handful of round trips.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool

from devtools.embedded_db import ensure_database
from devtools.tome_emulator import tokens as token_shapes

logger = logging.getLogger("tome.emulator")

IDEMPOTENCY_TTL_HOURS = 24
# A random token colliding with an existing one is astronomically rare; a few rounds always suffice.
MAX_MINT_ROUNDS = 8

SCHEMA = """
CREATE TABLE IF NOT EXISTS tome_namespace (
    id          serial PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    format      text NOT NULL CHECK (format IN ('numeric16', 'prefixed')),
    prefix      text NOT NULL DEFAULT '',
    master_key  bytea NOT NULL CHECK (length(master_key) = 32),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS tome_token (
    -- No foreign key: namespaces are never deleted, and its check costs ~20 ms per 5,000 rows.
    namespace_id  integer NOT NULL,
    token         text NOT NULL,
    value_digest  bytea NOT NULL,
    value         text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace_id, token),
    CONSTRAINT tome_token_value_unique UNIQUE (namespace_id, value_digest)
);
CREATE TABLE IF NOT EXISTS tome_idempotency (
    namespace_id   integer NOT NULL REFERENCES tome_namespace (id),
    client_digest  bytea NOT NULL,
    key            text NOT NULL,
    count          integer NOT NULL,
    tokens         text[] NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace_id, client_digest, key)
);
"""
_SCHEMA_LOCK_ID = 0x70_6F_6D_65  # serialises CREATE TABLE IF NOT EXISTS between processes


class VaultError(Exception):
    code = "internal_error"
    status = 500


class NamespaceNotFound(VaultError):
    code = "namespace_not_found"
    status = 404


class NamespaceConflict(VaultError):
    code = "namespace_conflict"
    status = 409


class IdempotencyMismatch(VaultError):
    code = "invalid_request"
    status = 400


@dataclass(frozen=True)
class Namespace:
    id: int
    name: str
    format: str
    prefix: str
    master_key: bytes
    created_at: datetime

    def public(self) -> dict[str, str]:
        return {"name": self.name, "format": self.format, "prefix": self.prefix,
                "created_at": self.created_at.isoformat()}


class Vault:
    def __init__(self, *, database_url: str, pool_size: int = 8) -> None:
        self._pool = ConnectionPool(
            database_url, min_size=1, max_size=max(pool_size, 1), kwargs={"autocommit": True},
            open=False, name="tome-emulator", timeout=30.0,
        )
        self._namespaces: dict[str, Namespace] = {}
        self._lock = threading.Lock()
        self._last_purge = time.monotonic()  # open() purges at start-up

    # --- lifecycle ------------------------------------------------------------------------------
    def open(self) -> None:
        self._pool.open(wait=True, timeout=30.0)
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_ID,))
            conn.execute(SCHEMA)
            conn.execute(
                "DELETE FROM tome_idempotency WHERE created_at < now() - make_interval(hours => %s)",
                (IDEMPOTENCY_TTL_HOURS,),
            )

    def close(self) -> None:
        self._pool.close()

    def ping(self) -> bool:
        try:
            with self._pool.connection(timeout=2.0) as conn:
                conn.execute("SELECT 1")
            return True
        except Exception:  # noqa: BLE001 - any failure means "not healthy"
            return False

    # --- namespaces -----------------------------------------------------------------------------
    def namespace_ensure(self, *, name: str, token_format: str, prefix: str) -> tuple[Namespace, bool]:
        """Create the namespace and its master key, or return the existing one. (namespace, created)."""
        with self._pool.connection() as conn:
            row = conn.execute(
                "INSERT INTO tome_namespace (name, format, prefix, master_key) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (name) DO NOTHING RETURNING id, name, format, prefix, master_key, created_at",
                (name, token_format, prefix, token_shapes.new_master_key()),
            ).fetchone()
            created = row is not None
            if row is None:
                row = conn.execute(
                    "SELECT id, name, format, prefix, master_key, created_at FROM tome_namespace WHERE name = %s",
                    (name,),
                ).fetchone()
        namespace = Namespace(*row)
        if namespace.format != token_format or namespace.prefix != prefix:
            raise NamespaceConflict(
                f"Namespace {name} already exists with format {namespace.format}"
                f" and prefix '{namespace.prefix}'."
            )
        with self._lock:
            self._namespaces[name] = namespace
        return namespace, created

    def namespace_list(self) -> list[Namespace]:
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT id, name, format, prefix, master_key, created_at FROM tome_namespace ORDER BY name"
            ).fetchall()
        return [Namespace(*row) for row in rows]

    def namespace_get(self, *, name: str) -> Namespace:
        namespace = self._namespaces.get(name)
        if namespace is not None:
            return namespace
        with self._pool.connection() as conn:
            row = conn.execute(
                "SELECT id, name, format, prefix, master_key, created_at FROM tome_namespace WHERE name = %s",
                (name,),
            ).fetchone()
        if row is None:
            raise NamespaceNotFound(f"Namespace {name} does not exist.")
        namespace = Namespace(*row)
        with self._lock:
            self._namespaces[name] = namespace
        return namespace

    # --- operations -----------------------------------------------------------------------------
    def generate(self, *, namespace: Namespace, count: int, idempotency_key: str | None = None,
                 client_token: str = "") -> list[str]:
        if idempotency_key is None:
            with self._pool.connection() as conn:
                return self._mint(conn, namespace=namespace, count=count)
        client_digest = hashlib.sha256(client_token.encode("utf-8")).digest()
        self._purge_expired_keys()
        with self._pool.connection() as conn, conn.transaction():
            # Same key from two concurrent retries: the second waits here, then sees the first's row.
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                (f"{namespace.id}:{client_digest.hex()}:{idempotency_key}",),
            )
            row = conn.execute(
                "SELECT count, tokens FROM tome_idempotency WHERE namespace_id = %s AND client_digest = %s"
                " AND key = %s AND created_at >= now() - make_interval(hours => %s)",
                (namespace.id, client_digest, idempotency_key, IDEMPOTENCY_TTL_HOURS),
            ).fetchone()
            if row is not None:
                if row[0] != count:
                    raise IdempotencyMismatch(
                        f"Idempotency-Key was first used with count {row[0]}, not {count}."
                    )
                return list(row[1])
            minted = self._mint(conn, namespace=namespace, count=count)
            conn.execute(
                "INSERT INTO tome_idempotency (namespace_id, client_digest, key, count, tokens)"
                " VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (namespace_id, client_digest, key)"
                " DO UPDATE SET count = EXCLUDED.count, tokens = EXCLUDED.tokens, created_at = now()",
                (namespace.id, client_digest, idempotency_key, count, minted),
            )
            return minted

    def _purge_expired_keys(self) -> None:
        """Hourly at most: keyed generates would otherwise pile up their token lists forever."""
        now = time.monotonic()
        with self._lock:
            if now - self._last_purge < 3600:
                return
            self._last_purge = now
        with self._pool.connection() as conn:
            conn.execute(
                "DELETE FROM tome_idempotency WHERE created_at < now() - make_interval(hours => %s)",
                (IDEMPOTENCY_TTL_HOURS,),
            )

    def _mint(self, conn: psycopg.Connection, *, namespace: Namespace, count: int) -> list[str]:
        """``count`` brand-new tokens bound to fresh surrogate values."""
        for _ in range(MAX_MINT_ROUNDS):
            values = token_shapes.surrogate_values(count)
            candidates = token_shapes.new_tokens(token_format=namespace.format, prefix=namespace.prefix,
                                                 count=count)
            digests = [token_shapes.value_digest(namespace.master_key, value).hex() for value in values]
            try:
                # A savepoint inside the idempotency transaction, a plain one-statement commit otherwise.
                with conn.transaction():
                    rows = conn.execute(_INSERT_TOKENS_STRICT,
                                        (namespace.id, _json(candidates), _json(digests), _json(values))
                                        ).fetchall()
                return [token for _digest, token in rows]
            except psycopg.errors.UniqueViolation:
                continue  # a random token collided (astronomically rare): mint the batch again
        raise VaultError("Could not mint unique tokens.")

    def tokenize(self, *, namespace: Namespace, values: Sequence[str]) -> list[str]:
        """Convergent: one token per distinct value, forever, also under concurrent identical batches."""
        by_digest = {token_shapes.value_digest(namespace.master_key, value).hex(): value
                     for value in dict.fromkeys(values)}
        token_of: dict[str, str] = {}
        with self._pool.connection() as conn:
            # Most values of a retried or repeated batch exist already: find those first (cheap).
            token_of.update(conn.execute(_SELECT_BY_DIGEST, (namespace.id, _json(list(by_digest)))).fetchall())
            pending = sorted(d for d in by_digest if d not in token_of)
            if pending:
                # Fast path, a plain INSERT (half the cost of ON CONFLICT). It fails as a whole if a
                # concurrent call inserted one of these values meanwhile; the loop below handles that.
                try:
                    token_of.update(conn.execute(_INSERT_TOKENS_STRICT, (
                        namespace.id, _json(token_shapes.new_tokens(
                            token_format=namespace.format, prefix=namespace.prefix, count=len(pending))),
                        _json(pending), _json([by_digest[d] for d in pending]),
                    )).fetchall())
                except (psycopg.errors.UniqueViolation, psycopg.errors.DeadlockDetected):
                    pass
            for _ in range(MAX_MINT_ROUNDS):
                # Sorted by digest so concurrent batches take unique-index locks in one order
                # and cannot deadlock on each other's in-flight inserts.
                pending = sorted(d for d in by_digest if d not in token_of)
                if not pending:
                    break
                candidates = token_shapes.new_tokens(token_format=namespace.format, prefix=namespace.prefix,
                                                     count=len(pending))
                try:
                    rows = conn.execute(_INSERT_TOKENS, (
                        namespace.id, _json(candidates), _json(pending), _json([by_digest[d] for d in pending]),
                    )).fetchall()
                except psycopg.errors.DeadlockDetected:  # belt and braces: retry the round
                    time.sleep(0.01)
                    continue
                token_of.update(rows)
                if len(rows) == len(pending):
                    break
                # Skipped rows are values a concurrent call tokenized first (visible now: autocommit
                # gives each statement a fresh snapshot) or, astronomically rarely, a token
                # collision that the next round retries with a new candidate.
                skipped = [d for d in pending if d not in token_of]
                token_of.update(conn.execute(_SELECT_BY_DIGEST, (namespace.id, _json(skipped))).fetchall())
        if len(token_of) < len(by_digest):
            raise VaultError("Could not tokenize the batch.")
        digest_of = {value: digest for digest, value in by_digest.items()}
        return [token_of[digest_of[value]] for value in values]

    def detokenize(self, *, namespace: Namespace, tokens: Sequence[str]) -> list[str | None]:
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT t.token, t.value FROM tome_token t"
                " WHERE t.namespace_id = %s"
                " AND t.token = ANY(ARRAY(SELECT json_array_elements_text(%s::json)))",
                (namespace.id, _json(list(set(tokens)))),
            ).fetchall()
        value_of = dict(rows)
        return [value_of.get(token) for token in tokens]

    def lookup(self, *, namespace: Namespace, values: Sequence[str]) -> list[str | None]:
        digests = [token_shapes.value_digest(namespace.master_key, value).hex() for value in values]
        with self._pool.connection() as conn:
            rows = conn.execute(_SELECT_BY_DIGEST, (namespace.id, _json(list(set(digests))))).fetchall()
        token_of = dict(rows)
        return [token_of.get(digest) for digest in digests]


# Arrays travel as one JSON text parameter each: psycopg adapts a 5,000-element list element by
# element in Python (~80 ms per batch), json.dumps does it in C (~1 ms). Digests travel as hex.
def _json(items: list[str]) -> str:
    return json.dumps(items, ensure_ascii=False, separators=(",", ":"))


_INSERT_TOKENS = (
    "INSERT INTO tome_token (namespace_id, token, value_digest, value)"
    " SELECT %s, u.token, decode(u.digest, 'hex'), u.value"
    " FROM ROWS FROM (json_array_elements_text(%s::json), json_array_elements_text(%s::json),"
    "                 json_array_elements_text(%s::json)) AS u(token, digest, value)"
    " ON CONFLICT DO NOTHING"
    " RETURNING encode(value_digest, 'hex'), token"
)
# Without ON CONFLICT: twice as fast, for batches whose values and tokens are all expected new.
_INSERT_TOKENS_STRICT = _INSERT_TOKENS.replace(" ON CONFLICT DO NOTHING", "")
_SELECT_BY_DIGEST = (
    "SELECT encode(t.value_digest, 'hex'), t.token FROM tome_token t"
    " WHERE t.namespace_id = %s"
    " AND t.value_digest = ANY(ARRAY(SELECT decode(d, 'hex') FROM json_array_elements_text(%s::json) d))"
)


# --- databases ----------------------------------------------------------------------------------
def create_database(name: str) -> str:
    """Create database ``name`` (if missing) and return its URL.

    On the server of ``DATABASE_URL`` when that is set, else in the embedded PostgreSQL.
    """
    server_url = os.environ.get("DATABASE_URL", "")
    if not server_url:
        return ensure_database(name)  # Django-free; starts the embedded server
    with psycopg.connect(make_conninfo(server_url, dbname="postgres"), autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            except psycopg.errors.DuplicateDatabase:
                pass
    return make_conninfo(server_url, dbname=name)


def drop_database(database_url: str) -> None:
    name = conninfo_to_dict(database_url)["dbname"]
    with psycopg.connect(make_conninfo(database_url, dbname="postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


def default_database_url() -> str:
    """``TOME_EMULATOR_DATABASE_URL``, else a ``tome_emulator`` database next to the app's own."""
    return os.environ.get("TOME_EMULATOR_DATABASE_URL") or create_database("tome_emulator")
