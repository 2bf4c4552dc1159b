"""Tests of the monitoring room: /metrics, alerts, snapshots, dashboard, logs, pool config audit."""
