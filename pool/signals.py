"""Signals of the pool room: how the rooms above pool (refill, monitoring) learn what happened in it
without pool importing them."""
from __future__ import annotations

from django.dispatch import Signal

# Sent after the reservation committed, never if it rolled back. kwargs: pool (Pool), count (int).
# Sender: the Pool class. Receivers run on the request thread: keep them cheap. Cached receiver
# lookup: sent on every reservation.
pairs_reserved = Signal(use_caching=True)

# Leases retired because they expired (the sweep, or a confirm/read that found one past its end),
# sent after the statement; kwargs: by_consumer (dict consumer name -> pairs). Sender: TokenPair.
# Monitoring counts them (tokenpool_pairs_retired_expired_total{consumer}): what a client's lost
# buffer or lost confirmations cost, per consumer (docs/client-library.md, "After a crash").
leases_expired = Signal()
