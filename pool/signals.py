"""Signals of the pool room: how the rooms above pool (refill, monitoring) learn what happened in it
without pool importing them."""
from __future__ import annotations

from django.dispatch import Signal

# Sent after the reservation committed, never if it rolled back. kwargs: pool (Pool), count (int).
# Sender: the Pool class. Receivers run on the request thread: keep them cheap. Cached receiver
# lookup: sent on every reservation.
pairs_reserved = Signal(use_caching=True)
