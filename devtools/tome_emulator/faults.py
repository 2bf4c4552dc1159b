"""Fault injection (latency, errors, timeouts, outage) and the call counters benchmarks read."""
from __future__ import annotations

import random
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import Any

# Injectable error statuses and the error code each one answers with.
ERROR_CODES = {
    429: "rate_limited",
    500: "internal_error",
    502: "bad_gateway",
    503: "unavailable",
    504: "gateway_timeout",
}
MAX_LATENCY_MS = 600_000
MAX_TIMEOUT_SECONDS = 600.0


class InvalidFaults(ValueError):
    pass


@dataclass
class FaultSettings:
    latency_ms: int = 0
    jitter_ms: int = 0
    error_rate: float = 0.0
    error_status: int = 503
    timeout_rate: float = 0.0
    timeout_seconds: float = 30.0
    outage: bool = False


def _check_latency(name: str, value: float) -> int:
    if value != int(value) or not 0 <= value <= MAX_LATENCY_MS:
        raise InvalidFaults(f"{name} must be an integer between 0 and {MAX_LATENCY_MS}.")
    return int(value)


def _check_rate(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise InvalidFaults(f"{name} must be between 0.0 and 1.0.")
    return float(value)


def _check_error_status(name: str, value: float) -> int:
    if value not in ERROR_CODES:
        raise InvalidFaults(f"error_status must be one of {sorted(ERROR_CODES)}.")
    return int(value)


def _check_timeout_seconds(name: str, value: float) -> float:
    if not 0.0 <= value <= MAX_TIMEOUT_SECONDS:
        raise InvalidFaults(f"timeout_seconds must be between 0 and {MAX_TIMEOUT_SECONDS:g}.")
    return float(value)


# The numeric fields' validators (``outage`` is the one boolean).
_NUMBER_CHECKS: dict[str, Callable[[str, float], int | float]] = {
    "latency_ms": _check_latency, "jitter_ms": _check_latency,
    "error_rate": _check_rate, "timeout_rate": _check_rate,
    "error_status": _check_error_status, "timeout_seconds": _check_timeout_seconds,
}


def _check(name: str, value: Any) -> Any:
    """Validate one field strictly: a wrong type is a caller bug the emulator must surface."""
    if name == "outage":
        if not isinstance(value, bool):
            raise InvalidFaults("outage must be a boolean.")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidFaults(f"{name} must be a number.")
    check = _NUMBER_CHECKS.get(name)
    if check is None:
        raise InvalidFaults(f"Unknown fault setting {name}.")
    return check(name, value)


class Faults:
    """Thread-safe current fault settings; every request reads one consistent snapshot."""

    def __init__(self, initial: FaultSettings | None = None) -> None:
        self._lock = threading.Lock()
        self._settings = initial or FaultSettings()
        self._random = random.Random()

    def snapshot(self) -> FaultSettings:
        with self._lock:
            return FaultSettings(**asdict(self._settings))

    def update(self, changes: dict[str, Any]) -> FaultSettings:
        known = {f.name for f in fields(FaultSettings)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise InvalidFaults(f"Unknown fault setting(s): {', '.join(unknown)}.")
        checked = {name: _check(name, value) for name, value in changes.items()}
        with self._lock:
            for name, value in checked.items():
                setattr(self._settings, name, value)
            return FaultSettings(**asdict(self._settings))

    def roll(self, rate: float) -> bool:
        if rate <= 0.0:
            return False
        with self._lock:
            return self._random.random() < rate

    def delay_seconds(self, settings: FaultSettings) -> float:
        if not settings.latency_ms and not settings.jitter_ms:
            return 0.0
        with self._lock:
            jitter = self._random.uniform(0, settings.jitter_ms) if settings.jitter_ms else 0.0
        return (settings.latency_ms + jitter) / 1000.0


class Telemetry:
    """Per-namespace per-operation call counters and a ring buffer of recent calls (no values)."""

    def __init__(self, *, capacity: int = 1000) -> None:
        self._lock = threading.Lock()
        self._calls: dict[str, dict[str, dict[str, int]]] = {}
        # Items carried by successful calls (tokens generated, values tokenized...): lets a load test
        # amortise a refill's calls over the pairs it made without reading TokenPool's database.
        self._items: dict[str, dict[str, int]] = {}
        self._recent: deque[dict[str, Any]] = deque(maxlen=capacity)
        self.capacity = capacity

    def record(self, *, namespace: str, operation: str, status: int, correlation_id: str,
               items: int | None, duration_ms: float, fault: str | None) -> None:
        outcome = "ok" if status < 400 else "error"
        entry = {
            "namespace": namespace, "operation": operation, "status": status,
            "correlation_id": correlation_id, "items": items,
            "at": datetime.now(UTC).isoformat(), "duration_ms": round(duration_ms, 2),
            "fault": fault,
        }
        with self._lock:
            per_op = self._calls.setdefault(namespace, {}).setdefault(operation, {"ok": 0, "error": 0})
            per_op[outcome] += 1
            if outcome == "ok" and items:
                per_ns = self._items.setdefault(namespace, {})
                per_ns[operation] = per_ns.get(operation, 0) + items
            self._recent.append(entry)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            calls = {ns: {op: dict(c) for op, c in ops.items()} for ns, ops in self._calls.items()}
            return {"calls": calls,
                    "items": {ns: dict(ops) for ns, ops in self._items.items()},
                    "total": sum(c["ok"] + c["error"] for ops in calls.values() for c in ops.values())}

    def reset(self) -> None:
        with self._lock:
            self._calls.clear()
            self._items.clear()
            self._recent.clear()

    def recent(self, *, limit: int) -> list[dict[str, Any]]:
        """Newest first."""
        with self._lock:
            return list(reversed(self._recent))[:limit]
