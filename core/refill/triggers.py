"""On-demand refill trigger (placeholder until the refill work lands; see issue 4)."""
from __future__ import annotations


def on_pairs_reserved(*, pool, count: int) -> None:  # noqa: ARG001 - replaced by the refill engineer
    return None
