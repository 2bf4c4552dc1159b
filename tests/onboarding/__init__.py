"""Onboarding room: state machine, four-eyes approvals, plan loading, readiness gate, admin."""
