"""All of TokenPool's models live in their domain rooms; importing them here registers them with
Django under the one app label "core"."""
from core.api.models import ApiKey
from core.monitoring.models import PoolAlert, PoolConfigChange, PoolSnapshot
from core.onboarding.models import ApprovalDecision, OnboardingSummary, OnboardingTask, OnboardingTransition
from core.pool.models import AuditRecord, Pool, TokenPair
from core.refill.models import RefillLease, RefillRun

__all__ = [
    "ApiKey",
    "ApprovalDecision",
    "AuditRecord",
    "OnboardingSummary",
    "OnboardingTask",
    "OnboardingTransition",
    "Pool",
    "PoolAlert",
    "PoolConfigChange",
    "PoolSnapshot",
    "RefillLease",
    "RefillRun",
    "TokenPair",
]
