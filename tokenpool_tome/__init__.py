"""tokenpool-tome-client: the typed Python clients of TOME and of TokenPool.

- ``HttpTokenizationLibrary`` (the library approach): live tokenization against TOME.
- ``TokenPoolClient`` (the pool approach): reservations and lookups through TokenPool's API, with
  an optional fallback to a TokenizationLibrary while TokenPool is unreachable.

Django-free; ships alone as the ``tokenpool-tome-client`` wheel and is also what the TokenPool
service itself uses (its Django glue lives in ``tome/provider.py``). Usage: docs/client-library.md.
The package's names are each client module's public names (``client.__all__``,
``pool_client.__all__``) plus the correlation helpers.
"""
from tokenpool_tome.client import (
    CallRecord,
    CircuitOpenError,
    HttpTokenizationLibrary,
    NamespaceNotFound,
    TokenizationLibrary,
    TokenPair,
    TomeClientConfig,
    TomeError,
    TomeRequestError,
    TomeResponseError,
    TomeUnavailable,
    __version__,
)
from tokenpool_tome.correlation import correlation_scope, get_correlation_id
from tokenpool_tome.pool_client import (
    CLIENT_DIRECT,
    IdempotencyKeyReused,
    InvalidRequest,
    NotAuthenticated,
    NotFound,
    PermissionDenied,
    Reservation,
    ReservationNotActive,
    Throttled,
    TokenPoolClient,
    TokenPoolError,
    TokenPoolUnavailable,
)

__all__ = [
    # the library approach (tokenpool_tome.client)
    "HttpTokenizationLibrary", "TokenizationLibrary", "TomeClientConfig", "TokenPair", "CallRecord",
    "TomeError", "TomeUnavailable", "CircuitOpenError", "TomeRequestError", "NamespaceNotFound", "TomeResponseError",
    # the pool approach (tokenpool_tome.pool_client)
    "TokenPoolClient", "Reservation", "CLIENT_DIRECT",
    "TokenPoolError", "TokenPoolUnavailable", "InvalidRequest", "NotAuthenticated", "PermissionDenied", "NotFound",
    "ReservationNotActive", "IdempotencyKeyReused", "Throttled",
    # both
    "__version__", "correlation_scope", "get_correlation_id",
]
