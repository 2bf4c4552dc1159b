"""The TokenizationLibrary's vocabulary: its protocol, its configuration and the values it returns.

Apart from the HTTP client (``client.py``) because ``TokenPoolClient`` speaks it too (its lookups
return ``TokenPair`` and its fallback takes any ``TokenizationLibrary``). Public names are
re-exported by ``tokenpool_tome`` and ``tokenpool_tome.client``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = ["CallRecord", "TokenPair", "TokenizationLibrary", "TomeClientConfig"]


@dataclass(frozen=True, slots=True)
class TokenPair:
    """A pair of tokens: ``internal_token`` (NS1) and ``external_ref_id`` (NS2).

    ``status`` and ``source`` are filled only by TokenPoolClient lookups (the server's pair body,
    or ``source="client_direct"`` for its TOME fallback). They take no part in equality or hashing:
    a pair is its two tokens, wherever it was read from.
    """

    internal_token: str
    external_ref_id: str
    status: str | None = field(default=None, compare=False)
    source: str | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One HTTP attempt against TOME, as reported to ``on_call`` (never carries values/tokens)."""

    namespace: str
    operation: str  # generate | tokenize | detokenize | lookup
    batch_size: int
    attempt: int  # 1 for the first try, 2.. for retries of the same logical call
    latency_seconds: float
    outcome: str  # ok | error
    status_code: int | None  # None when no response arrived (timeout, connection error)
    error: str | None  # e.g. "ReadTimeout", "503 unavailable"; None on success
    correlation_id: str | None = None


@dataclass(frozen=True)
class TomeClientConfig:
    base_url: str
    api_token: str
    ns1: str = "ns1"
    ns2: str = "ns2"
    connect_timeout: float = 1.0
    read_timeout: float = 2.0
    pool_timeout: float = 1.0
    max_attempts: int = 3
    backoff_initial: float = 0.05
    backoff_max: float = 1.0
    breaker_failure_threshold: int = 5
    breaker_reset_seconds: float = 15.0
    max_batch: int = 5000

    def __post_init__(self) -> None:
        if not self.base_url:
            raise ValueError("base_url is required")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if min(self.connect_timeout, self.read_timeout, self.pool_timeout) <= 0:
            raise ValueError("timeouts must be positive")
        if self.backoff_initial < 0 or self.backoff_max < 0:
            raise ValueError("backoff must not be negative")

    def __repr__(self) -> str:
        # The bearer token must never reach a log line or a traceback through a repr.
        return (f"TomeClientConfig(base_url={self.base_url!r}, api_token='<redacted>', "
                f"ns1={self.ns1!r}, ns2={self.ns2!r}, max_attempts={self.max_attempts}, "
                f"max_batch={self.max_batch})")


@runtime_checkable
class TokenizationLibrary(Protocol):
    """What the service (and any consuming team) codes against; see HttpTokenizationLibrary."""

    def tokenize(self, value: str) -> TokenPair: ...
    def tokenize_batch(self, values: Sequence[str]) -> list[TokenPair]: ...
    def detokenize(self, external_ref_id: str) -> str | None: ...
    def detokenize_batch(self, external_ref_ids: Sequence[str]) -> list[str | None]: ...
    def lookup(self, value: str) -> TokenPair | None: ...
    def lookup_batch(self, values: Sequence[str]) -> list[TokenPair | None]: ...
    def detokenize_internal(self, internal_token: str) -> str | None: ...
    def external_for(self, internal_token: str) -> str | None: ...
    def external_for_batch(self, internal_tokens: Sequence[str]) -> list[str | None]: ...
    def internal_for(self, external_ref_id: str) -> str | None: ...
    def internal_for_batch(self, external_ref_ids: Sequence[str]) -> list[str | None]: ...
    def generate_pairs(self, count: int, *, batch_size: int | None = None) -> list[TokenPair]: ...
    def ping(self) -> bool: ...
    def close(self) -> None: ...
