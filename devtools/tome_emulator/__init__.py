"""A local stand-in for TOME: a separate HTTP server process implementing docs/tome-api.md.

Persistent vault in its own PostgreSQL database, fault injection and call counters for tests and
benchmarks. Never imports Django: run it with ``python -m devtools.tome_emulator``.
"""
