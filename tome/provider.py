"""Django glue for the TokenizationLibrary: one client per process, built from settings.

``get_tome_client()`` returns the process-wide ``HttpTokenizationLibrary`` for a namespace pair (one
pooled httpx client shared by every thread); ``reset_tome_client()`` drops it so the next call rebuilds it,
which happens automatically when a ``TOME_*`` setting changes (``override_settings`` in tests).

Every HTTP attempt is also announced through the ``tome_call`` signal (``sender`` is
``HttpTokenizationLibrary``, ``record`` a ``CallRecord``), so metrics code counts calls without
owning the client.
"""
from __future__ import annotations

import threading

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import Signal

from tokenpool_tome.client import CallRecord, HttpTokenizationLibrary, TomeClientConfig

tome_call = Signal()  # kwargs: record: CallRecord

_lock = threading.Lock()
# One client per (NS1, NS2) namespace pair: pools may name their own namespaces (a PRODUCTION pool
# must never be filled from UAT's), and each pair keeps its own connection pool and breaker.
# The request path (``budget="request"``) has its own clients: a tighter budget, and its own breaker
# and connection pool, so a refill's long retries never hold a request's connection.
_clients: dict[tuple[str, str, str], HttpTokenizationLibrary] = {}

WORK = "work"  # refills and other background work: TOME_* timeouts and retries
REQUEST = "request"  # inside an API request: TOME_REQUEST_* (fits the client library's 5 s default)


def tome_client_config(*, ns1: str | None = None, ns2: str | None = None, budget: str = WORK) -> TomeClientConfig:
    request = budget == REQUEST
    return TomeClientConfig(
        base_url=settings.TOME_BASE_URL,
        api_token=settings.TOME_API_TOKEN,
        ns1=ns1 or settings.TOME_NS1,
        ns2=ns2 or settings.TOME_NS2,
        connect_timeout=settings.TOME_REQUEST_CONNECT_TIMEOUT if request else settings.TOME_CONNECT_TIMEOUT,
        read_timeout=settings.TOME_REQUEST_READ_TIMEOUT if request else settings.TOME_READ_TIMEOUT,
        pool_timeout=settings.TOME_REQUEST_CONNECT_TIMEOUT if request else settings.TOME_POOL_TIMEOUT,
        max_attempts=settings.TOME_REQUEST_MAX_ATTEMPTS if request else settings.TOME_MAX_ATTEMPTS,
        backoff_max=0.2 if request else TomeClientConfig.backoff_max,
        breaker_failure_threshold=settings.TOME_BREAKER_FAILURES,
        breaker_reset_seconds=settings.TOME_BREAKER_RESET_SECONDS,
        max_batch=settings.TOME_MAX_BATCH,
    )


def get_tome_client(*, ns1: str | None = None, ns2: str | None = None, budget: str = WORK) -> HttpTokenizationLibrary:
    """The process-wide client for a namespace pair (default: ``TOME_NS1``/``TOME_NS2``) and budget."""
    key = (ns1 or settings.TOME_NS1, ns2 or settings.TOME_NS2, budget)
    client = _clients.get(key)
    if client is not None:
        return client
    with _lock:
        if key not in _clients:
            _clients[key] = HttpTokenizationLibrary(tome_client_config(ns1=key[0], ns2=key[1], budget=budget),
                                                    on_call=_announce)
        return _clients[key]


def tome_client_for_pool(pool: object, *, budget: str = WORK) -> HttpTokenizationLibrary:
    """The client speaking to the pool's own NS1/NS2 namespaces (``budget=REQUEST`` on a request path)."""
    return get_tome_client(ns1=pool.ns1_namespace, ns2=pool.ns2_namespace,  # type: ignore[attr-defined]
                           budget=budget)


def reset_tome_client() -> None:
    """Close and forget every client; the next ``get_tome_client()`` builds new ones."""
    with _lock:
        clients = list(_clients.values())
        _clients.clear()
    for client in clients:
        client.close()


def _announce(record: CallRecord) -> None:
    tome_call.send(sender=HttpTokenizationLibrary, record=record)


def _rebuild_on_tome_setting_change(*, setting: str, **kwargs: object) -> None:
    if setting.startswith("TOME_"):
        reset_tome_client()


# Connected directly rather than with @receiver: Django is untyped here, and the decorator would
# make the function untyped for mypy. Same registration (weak reference, no dispatch_uid).
setting_changed.connect(_rebuild_on_tome_setting_change)
