"""Refill: schedules, on-demand trigger, the refill run, crash safety, the qcluster end to end."""
