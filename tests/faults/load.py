"""Client load for the fault suite: threads doing what a card-issuing service does, recording
every answer, and the invariants checked against the database afterwards."""
from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg


@dataclass
class Answer:
    phase: str
    op: str
    status: int | str  # HTTP status, or the transport error's type name
    code: str = ""
    retry_after: bool = False


@dataclass
class Load:
    """``threads`` clients looping reserve (Idempotency-Key, retried with the same key until it
    succeeds) → confirm (retried) → lookup (unique X-Correlation-ID), until stopped."""

    base_url: str
    api_key: str
    threads: int = 6
    phase: str = "before"
    answers: list[Answer] = field(default_factory=list)
    issued: dict[str, dict[str, Any]] = field(default_factory=dict)  # idempotency key → 2xx body
    confirmed: set[str] = field(default_factory=set)
    audited: list[str] = field(default_factory=list)  # correlation ids of 200 lookups
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)  # a client that saw a contract breach

    def start(self) -> Load:
        for n in range(self.threads):
            worker = threading.Thread(target=self._run, name=f"load-{n}", daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=60)
        assert not self.errors, self.errors

    def successes(self, phase: str | None = None) -> int:
        return sum(1 for a in list(self.answers)
                   if isinstance(a.status, int) and a.status < 400 and (phase is None or a.phase == phase))

    def in_phase(self, phase: str) -> list[Answer]:
        return [a for a in list(self.answers) if a.phase == phase]

    def _call(self, client: httpx.Client, op: str, method: str, path: str, **kwargs: Any) -> httpx.Response | None:
        phase = self.phase
        try:
            response = client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            with self._lock:
                self.answers.append(Answer(phase, op, type(exc).__name__))
            time.sleep(0.05)
            return None
        code = ""
        if response.status_code >= 400:
            try:
                code = response.json().get("code", "")
            except ValueError:
                code = "not_json"
            time.sleep(0.05)  # a failing client backs off a little, like a real one
        with self._lock:
            self.answers.append(Answer(phase, op, response.status_code, code, "Retry-After" in response.headers))
        return response

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - reported by stop(): a thread's exception would vanish
            self.errors.append(exc)

    def _loop(self) -> None:
        headers = {"Authorization": f"Api-Key {self.api_key}"}
        with httpx.Client(base_url=self.base_url, headers=headers, timeout=30.0) as client:
            while not self._stop.is_set():
                key = uuid.uuid4().hex
                body = None
                while body is None and not self._stop.is_set():
                    r = self._call(client, "reserve", "POST", "/api/v1/reservations", json={},
                                   headers={"Idempotency-Key": key})
                    if r is not None and r.status_code in (200, 201):
                        body = r.json()
                    elif r is not None and r.status_code < 500 and r.status_code != 429:
                        raise AssertionError(f"reservation refused: {r.status_code} {r.text}")
                if body is None:
                    return
                with self._lock:
                    if key in self.issued:
                        raise AssertionError("idempotency key reused by the load itself")
                    self.issued[key] = body
                rid = body["reservation_id"]
                while not self._stop.is_set():
                    r = self._call(client, "confirm", "POST", f"/api/v1/reservations/{rid}/confirm", json={})
                    if r is not None and r.status_code == 200:
                        with self._lock:
                            self.confirmed.add(rid)
                        break
                    if r is not None and r.status_code < 500 and r.status_code != 429:
                        raise AssertionError(f"confirm refused: {r.status_code} {r.text}")
                correlation = f"fault-{uuid.uuid4().hex}"
                r = self._call(client, "lookup", "POST", "/api/v1/lookup",
                               json={"internal_token": body["internal_token"]},
                               headers={"X-Correlation-ID": correlation})
                if r is not None and r.status_code == 200:
                    assert r.json()["external_ref_id"] == body["external_ref_id"]
                    with self._lock:
                        self.audited.append(correlation)

    # --- figures --------------------------------------------------------------------------------
    def table(self) -> dict[str, dict[str, int]]:
        """{phase: {"op status code": n}} for the report."""
        out: dict[str, Counter] = {}
        for a in list(self.answers):
            label = f"{a.op} {a.status}{' ' + a.code if a.code else ''}"
            out.setdefault(a.phase, Counter())[label] += 1
        return {phase: dict(sorted(c.items())) for phase, c in out.items()}

    def summary(self) -> str:
        answers = list(self.answers)
        ok = sum(1 for a in answers if isinstance(a.status, int) and a.status < 400)
        lines = [(f"sent {len(answers)}, succeeded {ok}, failed {len(answers) - ok}; "
                  f"cards reserved {len(self.issued)}, confirmed {len(self.confirmed)}, "
                  f"lookups audited {len(self.audited)}")]
        for phase, counts in self.table().items():
            lines.append(f"  {phase}: " + ", ".join(f"{k}: {v}" for k, v in counts.items()))
        return "\n".join(lines)


def connect(pgdata: Path, dbname: str = "tokenpool") -> psycopg.Connection:
    return psycopg.connect(host=str(pgdata), user="postgres", dbname=dbname, autocommit=True)


def check_invariants(conn: psycopg.Connection, load: Load | None = None) -> dict[str, int]:
    """No pair issued twice, none lost (every pair in exactly one consistent state), audit complete."""
    total, tokens, refs, reservations = conn.execute(
        "SELECT count(*), count(DISTINCT internal_token), count(DISTINCT external_ref_id), "
        "count(reservation_id) FROM core_tokenpair").fetchone()
    assert total == tokens == refs, "a token appears on two rows"
    assert conn.execute("SELECT count(DISTINCT reservation_id) FROM core_tokenpair").fetchone()[0] == reservations
    by_state = dict(conn.execute("SELECT status, count(*) FROM core_tokenpair GROUP BY status").fetchall())
    assert set(by_state) <= {"AVAILABLE", "RESERVED", "USED", "RETIRED"}, by_state
    assert sum(by_state.values()) == total
    # Each state with exactly its own markers: never issued, or issued with a lease, used or retired.
    inconsistent = conn.execute("""
        SELECT count(*) FROM core_tokenpair WHERE NOT (
            (status = 'AVAILABLE' AND reservation_id IS NULL AND reserved_at IS NULL AND used_at IS NULL)
         OR (status = 'RESERVED' AND reservation_id IS NOT NULL AND expires_at IS NOT NULL AND used_at IS NULL
             AND retired_at IS NULL)
         OR (status = 'USED' AND reservation_id IS NOT NULL AND used_at IS NOT NULL AND retired_at IS NULL)
         OR (status = 'RETIRED' AND retired_at IS NOT NULL AND used_at IS NULL))""").fetchone()[0]
    assert inconsistent == 0
    figures = {"pairs": total, **{s.lower(): n for s, n in by_state.items()}}
    if load is None:
        return figures
    issued = list(load.issued.values())
    assert len({b["reservation_id"] for b in issued}) == len(issued), "two cards got one reservation"
    assert len({b["internal_token"] for b in issued}) == len(issued), "a pair was handed out twice"
    rows = {str(r[0]): r[1:] for r in conn.execute(
        "SELECT reservation_id, internal_token, external_ref_id, status FROM core_tokenpair "
        "WHERE reservation_id = ANY(%s::uuid[])", ([b["reservation_id"] for b in issued],)).fetchall()}
    for body in issued:  # every pair a client received is stored as that client's, nothing lost
        row = rows.get(body["reservation_id"])
        assert row is not None, f"reservation {body['reservation_id']} lost"
        assert row[:2] == (body["internal_token"], body["external_ref_id"])
        if body["reservation_id"] in load.confirmed:
            assert row[2] == "USED"
    audited = set(conn.execute("SELECT DISTINCT correlation_id FROM core_auditrecord WHERE correlation_id = ANY(%s)",
                               (load.audited,)).fetchall())
    missing = set(load.audited) - {r[0] for r in audited}
    assert not missing, f"{len(missing)} answered lookups have no audit record"
    figures.update(issued=len(issued), confirmed=len(load.confirmed), audited=len(load.audited))
    return figures
