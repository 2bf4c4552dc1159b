"""Re-export of ``tokenpool_tome.client`` (the TokenizationLibrary moved there so its wheel ships no
top-level ``core`` package). Same objects, not copies: patch ``tokenpool_tome.client`` in tests,
since rebinding a name here does not change what the real module uses."""
from tokenpool_tome.client import *  # noqa: F401,F403
from tokenpool_tome.client import (  # noqa: F401
    ERROR,
    OK,
    CallRecord,
    HttpTokenizationLibrary,
    TokenizationLibrary,
    TokenPair,
    TomeClientConfig,
    __all__,
    __version__,
)
