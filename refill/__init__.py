"""Refilling pools from TOME in bulk, on a django-q2 schedule and on demand."""
