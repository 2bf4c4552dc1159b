"""tokenpool-tome-client: the typed Python clients of TOME and of TokenPool.

- ``HttpTokenizationLibrary`` (the library approach): live tokenization against TOME.
- ``TokenPoolClient`` (the pool approach): reservations and lookups through TokenPool's API, with
  an optional fallback to a TokenizationLibrary while TokenPool is unreachable.

Django-free; ships alone as the ``tokenpool-tome-client`` wheel and is also what the TokenPool
service itself uses (its Django glue lives in ``core/tome/provider.py``). Usage: docs/client-library.md.
"""
from tokenpool_tome import client, pool_client
from tokenpool_tome.client import *  # client.__all__ also names the errors
from tokenpool_tome.client import __version__
from tokenpool_tome.correlation import correlation_scope, get_correlation_id
from tokenpool_tome.pool_client import *

__all__ = []
__all__ += client.__all__
__all__ += pool_client.__all__
__all__ += ["__version__", "correlation_scope", "get_correlation_id"]
