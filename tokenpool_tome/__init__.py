"""tokenpool-tome-client: the typed Python client of TOME (dual-namespace tokenization).

Django-free; ships alone as the ``tokenpool-tome-client`` wheel and is also what the TokenPool
service itself uses (its Django glue lives in ``core/tome/django.py``). Usage: docs/client-library.md.
"""
from tokenpool_tome.client import *  # noqa: F401,F403  (client.__all__ also names the errors)
from tokenpool_tome.client import __all__ as _client_api
from tokenpool_tome.client import __version__
from tokenpool_tome.correlation import correlation_scope, get_correlation_id

__all__ = [*_client_api, "__version__", "correlation_scope", "get_correlation_id"]
