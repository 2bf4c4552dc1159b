"""Development tooling: the process runner of `make run`, the embedded PostgreSQL and the TOME emulator.
No runtime app imports it; settings use the embedded database when DATABASE_URL is unset."""
