"""Re-export of ``tokenpool_tome.errors`` (the same exception classes, so ``except`` clauses match)."""
from tokenpool_tome.errors import *  # noqa: F401,F403
from tokenpool_tome.errors import (  # noqa: F401
    CircuitOpenError,
    NamespaceNotFound,
    TomeError,
    TomeRequestError,
    TomeResponseError,
    TomeUnavailable,
)
