"""Readiness gate: may a pool in environment E talk to TOME yet?

The refill run calls :func:`missing_approvals` before fetching anything and ends with outcome
``blocked_onboarding`` (naming what is missing) unless it returns an empty list.
"""
from __future__ import annotations

from onboarding.models import OnboardingGroup, OnboardingState, OnboardingTask


def missing_approvals(*, environment: str) -> list[str]:
    """Titles of the common onboarding tasks of ``environment`` that are not APPROVED, in plan order.

    An empty list means the environment is ready. Fails closed: when no common task exists for the
    environment (plan not loaded, unknown environment), the answer names that instead of passing."""
    env = (environment or "").strip().upper()
    rows = list(
        OnboardingTask.objects.filter(group=OnboardingGroup.COMMON, environment=env)
        .order_by("position", "id")
        .values_list("title", "state")
    )
    if not rows:
        return [f"Onboarding plan for environment {env or '(none)'} (not loaded; run manage.py load_onboarding_plan)"]
    return [title for title, state in rows if state != OnboardingState.APPROVED]
