"""Onboarding and implementation tracking with UAT/Production approvals (four-eyes)."""
