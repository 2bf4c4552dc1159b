"""Operations: metrics, alerts, pool snapshots, the admin dashboard and structured logs."""
