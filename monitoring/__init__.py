"""Operations: is the pool healthy, draining, refilled, saving TOME calls? Metrics, alerts,
pool snapshots, the admin dashboard, tunable audit and structured (redacted) logs."""
