"""Django glue for the TokenizationLibrary: one client per process, built from settings.

``get_tome_client()`` returns the process-wide ``HttpTokenizationLibrary`` (one pooled httpx
client shared by every thread); ``reset_tome_client()`` drops it so the next call rebuilds it,
which happens automatically when a ``TOME_*`` setting changes (``override_settings`` in tests).

Every HTTP attempt is also announced through the ``tome_call`` signal (``sender`` is
``HttpTokenizationLibrary``, ``record`` a ``CallRecord``), so metrics code counts calls without
owning the client.
"""
from __future__ import annotations

import threading

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import Signal, receiver

from core.tome.client import CallRecord, HttpTokenizationLibrary, TomeClientConfig

tome_call = Signal()  # kwargs: record: CallRecord

_lock = threading.Lock()
_client: HttpTokenizationLibrary | None = None


def tome_client_config() -> TomeClientConfig:
    return TomeClientConfig(
        base_url=settings.TOME_BASE_URL,
        api_token=settings.TOME_API_TOKEN,
        ns1=settings.TOME_NS1,
        ns2=settings.TOME_NS2,
        connect_timeout=settings.TOME_CONNECT_TIMEOUT,
        read_timeout=settings.TOME_READ_TIMEOUT,
        pool_timeout=settings.TOME_POOL_TIMEOUT,
        max_attempts=settings.TOME_MAX_ATTEMPTS,
        breaker_failure_threshold=settings.TOME_BREAKER_FAILURES,
        breaker_reset_seconds=settings.TOME_BREAKER_RESET_SECONDS,
        max_batch=settings.TOME_MAX_BATCH,
    )


def get_tome_client() -> HttpTokenizationLibrary:
    global _client
    client = _client
    if client is not None:
        return client
    with _lock:
        if _client is None:
            _client = HttpTokenizationLibrary(tome_client_config(), on_call=_announce)
        return _client


def reset_tome_client() -> None:
    """Close and forget the process-wide client; the next ``get_tome_client()`` builds a new one."""
    global _client
    with _lock:
        client, _client = _client, None
    if client is not None:
        client.close()


def _announce(record: CallRecord) -> None:
    tome_call.send(sender=HttpTokenizationLibrary, record=record)


@receiver(setting_changed)
def _rebuild_on_tome_setting_change(*, setting: str, **kwargs: object) -> None:
    if setting.startswith("TOME_"):
        reset_tome_client()
