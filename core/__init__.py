"""TokenPool's one Django app, split into rooms by domain.

pool/ reservations and pairs, tome/ the TOME client library and emulator, refill/ prefetching,
onboarding/ approvals tracking, monitoring/ metrics, alerts and the dashboard, api/ HTTP plumbing.
"""
