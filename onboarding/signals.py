"""Signals of the onboarding room: the rooms above it (monitoring) answer questions onboarding
asks without onboarding importing them."""
from __future__ import annotations

from django.dispatch import Signal

# Sent by the summary's TOME-call comparison. A receiver answers with (cards issued, TOME HTTP calls
# attributable to them) from the pool's own records (pairs handed out, refill runs' TOME calls), or None
# when it has nothing to say.
impact_measurement_requested = Signal()

# Sent by the go-live projection for one environment (``environment=``). A receiver answers with a list of
# dicts, one per pool of that environment: {"pool", "target", "available", "pairs_per_hour", "basis"} —
# the measured refill rate, so the readiness page can add the time to fill the target to the gate date.
pool_fill_requested = Signal()
