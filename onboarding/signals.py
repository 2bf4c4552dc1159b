"""Signals of the onboarding room: the rooms above it (monitoring) answer questions onboarding
asks without onboarding importing them."""
from __future__ import annotations

from django.dispatch import Signal

# Sent by the summary's TOME-call comparison. A receiver answers with (cards issued, TOME HTTP calls
# attributable to them) from the pool's own records (pairs handed out, refill runs' TOME calls), or None
# when it has nothing to say.
impact_measurement_requested = Signal()
