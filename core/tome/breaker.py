"""Re-export of ``tokenpool_tome.breaker`` (the TOME client's circuit breaker)."""
from tokenpool_tome.breaker import *  # noqa: F401,F403
from tokenpool_tome.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker  # noqa: F401
