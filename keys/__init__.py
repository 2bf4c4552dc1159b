"""Service API keys of consuming teams: hashed secrets, scopes, per-key limits, revocation."""
