"""tokenpool-tome-client: the typed Python client of TOME (dual-namespace tokenization).

Django-free; ships alone as the ``tokenpool-tome-client`` wheel and is also what the TokenPool
service itself uses (its Django glue lives in ``core/tome/django.py``). Usage: docs/client-library.md.
"""
from tokenpool_tome.client import (
    CallRecord,
    HttpTokenizationLibrary,
    TokenizationLibrary,
    TokenPair,
    TomeClientConfig,
    __version__,
)
from tokenpool_tome.correlation import correlation_scope, get_correlation_id
from tokenpool_tome.errors import (
    CircuitOpenError,
    NamespaceNotFound,
    TomeError,
    TomeRequestError,
    TomeResponseError,
    TomeUnavailable,
)

__all__ = [
    "CallRecord",
    "CircuitOpenError",
    "HttpTokenizationLibrary",
    "NamespaceNotFound",
    "TokenPair",
    "TokenizationLibrary",
    "TomeClientConfig",
    "TomeError",
    "TomeRequestError",
    "TomeResponseError",
    "TomeUnavailable",
    "__version__",
    "correlation_scope",
    "get_correlation_id",
]
