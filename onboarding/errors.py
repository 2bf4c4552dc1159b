"""Domain errors of the onboarding room, in the project's one error vocabulary (common.errors)."""
from __future__ import annotations

from common.errors import DomainRuleViolation, PermissionDenied


class OnboardingRuleViolation(DomainRuleViolation):
    """Base of every refused onboarding action (400 ``invalid_request``)."""

    detail = "The onboarding action is not allowed."


class TransitionNotAllowedFromState(OnboardingRuleViolation):
    detail = "The task is not in a state that allows this action."


class PrerequisitesNotApproved(OnboardingRuleViolation):
    detail = "A prerequisite of this task is not approved yet."

    def __init__(self, detail: str | None = None, *, missing: list[str] | None = None) -> None:
        self.missing = missing or []
        super().__init__(detail)


class FourEyesViolation(OnboardingRuleViolation):
    detail = "A person who started, submitted or changed a task cannot approve or reject it."


class NoteRequired(OnboardingRuleViolation):
    detail = "A rejection needs a note saying why."


class ApproverPermissionRequired(PermissionDenied):
    detail = "Only onboarding approvers may approve or reject tasks."
