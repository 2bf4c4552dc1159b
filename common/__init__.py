"""The bottom floor every app may use: the domain exception hierarchy, the append-only model base,
the TTL cache, shared admin mixins and the PostgreSQL backend. It imports no app."""
