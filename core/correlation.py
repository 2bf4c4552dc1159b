"""Re-export of ``tokenpool_tome.correlation``: the current request's correlation id.

The contextvar lives only there (``_current`` below is the same object, not a second ContextVar),
so ids bound through either import path are seen by logs, the API and TOME calls alike.
"""
from tokenpool_tome.correlation import *  # noqa: F401,F403
from tokenpool_tome.correlation import (  # noqa: F401
    CORRELATION_ID_PATTERN,
    _current,
    accept_or_generate,
    correlation_scope,
    get_correlation_id,
    new_correlation_id,
)
