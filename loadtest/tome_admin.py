"""The TOME emulator's admin API as the load test uses it: call counters and the injected latency.

The counters are read as before/after deltas, never reset: other callers of the same emulator
(a running stack, another engineer's benchmark) must not lose their numbers.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass(frozen=True)
class TomeStats:
    """One snapshot of ``GET /v1/admin/stats``: calls and items per (namespace, operation)."""

    calls: dict[tuple[str, str], int] = field(default_factory=dict)  # ok + error
    errors: dict[tuple[str, str], int] = field(default_factory=dict)
    items: dict[tuple[str, str], int] = field(default_factory=dict)

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> TomeStats:
        calls, errors, items = {}, {}, {}
        for ns, ops in body.get("calls", {}).items():
            for op, counts in ops.items():
                calls[(ns, op)] = int(counts.get("ok", 0)) + int(counts.get("error", 0))
                errors[(ns, op)] = int(counts.get("error", 0))
        for ns, ops in body.get("items", {}).items():
            for op, n in ops.items():
                items[(ns, op)] = int(n)
        return cls(calls=calls, errors=errors, items=items)

    def __sub__(self, earlier: TomeStats) -> TomeStats:
        def minus(now: dict, before: dict) -> dict:
            delta = {key: value - before.get(key, 0) for key, value in now.items()}
            return {key: value for key, value in delta.items() if value}
        return TomeStats(calls=minus(self.calls, earlier.calls), errors=minus(self.errors, earlier.errors),
                         items=minus(self.items, earlier.items))

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    def by_operation(self) -> dict[str, int]:
        return {f"{ns} {op}": n for (ns, op), n in sorted(self.calls.items())}


class TomeAdmin:
    """Admin client of one emulator (admin bearer token)."""

    def __init__(self, *, base_url: str, admin_token: str, timeout: float = 10.0) -> None:
        self._http = httpx.Client(base_url=base_url, timeout=timeout,
                                  headers={"Authorization": f"Bearer {admin_token}"})

    def close(self) -> None:
        self._http.close()

    def stats(self) -> TomeStats:
        response = self._http.get("/v1/admin/stats")
        if response.status_code == 401:
            raise RuntimeError("the TOME emulator refused the admin token (--tome-admin-token / "
                               "TOME_EMULATOR_ADMIN_TOKEN); TOME calls must be counted by TOME itself")
        response.raise_for_status()
        return TomeStats.from_body(response.json())

    def faults(self) -> dict[str, Any]:
        return self._http.get("/v1/admin/faults").raise_for_status().json()

    def set_faults(self, **changes: Any) -> dict[str, Any]:
        return self._http.put("/v1/admin/faults", json=changes).raise_for_status().json()

    def settle(self, *, quiet_seconds: float = 2.0, timeout: float = 90.0) -> TomeStats:
        """The counters once nothing has called TOME for ``quiet_seconds`` (a refill the run
        triggered finishes inside its own phase), or after ``timeout``."""
        deadline = time.monotonic() + timeout
        last = self.stats()
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.25)
            now = self.stats()
            if now != last:
                last, quiet_since = now, time.monotonic()
            elif time.monotonic() - quiet_since >= quiet_seconds:
                break
        return last
