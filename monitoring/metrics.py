"""Prometheus metrics (contract section 3): one scrape shows every process of the deployment.

Two sources, merged at scrape time (why: docs/operations.md, "Metrics"):
- Per-process events (TOME calls, request durations) are prometheus_client counters and
  histograms in multiprocess mode: each gunicorn worker, qcluster worker and management command
  writes its own mmap file under ``PROMETHEUS_MULTIPROC_DIR``; the scrape sums the files.
- State that the database already holds (pairs per status, reservations, refill runs, open
  alerts) is read from PostgreSQL by ``DatabaseCollector`` at scrape time, so it is the same
  whichever worker answers, survives restarts and needs no process to have seen the event.
"""
from __future__ import annotations

import logging
import os
import re
import socket
import time
from collections.abc import Iterator

from django.conf import settings
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from monitoring.multiproc import ENV as MULTIPROC_ENV

logger = logging.getLogger(__name__)

# Files are named after the writing process. A pid alone is not unique when containers share the
# directory (docker/compose.yaml mounts one volume into web and qcluster, each with its own pid
# namespace), so the host name goes in too; "_" is the library's field separator in file names.
_HOST = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:63] or "host"


def _process_identifier() -> str:
    return f"{_HOST}-{os.getpid()}"


if os.environ.get(MULTIPROC_ENV):
    # Set explicitly (also covers a script that imported prometheus_client before the settings
    # exported the directory); must happen before the first metric below is built.
    values.ValueClass = values.MultiProcessValue(process_identifier=_process_identifier)

# registry=None: these never go through a process-local registry; the scrape reads the files.
TOME_CALLS = Counter(
    "tokenpool_tome_calls", "HTTP calls to TOME, one per attempt (retries counted separately).",
    ["namespace", "operation", "outcome"], registry=None)
TOME_CALL_SECONDS = Histogram(
    "tokenpool_tome_call_duration_seconds", "Latency of one HTTP call to TOME.",
    ["namespace", "operation"], registry=None,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
# "max" across processes, alive or dead: the newest evidence of TOME answering / being unreachable,
# which the alert evaluator compares (monitoring/alerts.py).
TOME_LAST_OK = Gauge(
    "tokenpool_tome_last_ok_timestamp_seconds",
    "Unix time of the newest call TOME answered (2xx, or a 4xx that proves it is up).",
    ["namespace"], multiprocess_mode="max", registry=None)
TOME_LAST_UNAVAILABLE = Gauge(
    "tokenpool_tome_last_unavailable_timestamp_seconds",
    "Unix time of the newest call TOME did not answer usefully (timeout, connection error, 429, 5xx).",
    ["namespace"], multiprocess_mode="max", registry=None)
REQUEST_SECONDS = Histogram(
    "tokenpool_request_duration_seconds", "HTTP request duration by URL route (endpoint) and method.",
    ["endpoint", "method"], registry=None,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
# Counted where the leases are retired (pool.signals.leases_expired, in the qcluster's sweep or a
# request), never by counting pairs at scrape time.
PAIRS_RETIRED_EXPIRED = Counter(
    "tokenpool_pairs_retired_expired", "Reserved pairs retired because their lease expired unconfirmed, by the "
    "consumer whose key reserved them (a client's lost buffer or lost confirmations).", ["consumer"], registry=None)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def tome_call_unavailable(*, outcome: str, status_code: int | None) -> bool:
    """Whether an attempt says TOME is unreachable (as opposed to TOME refusing a bad request)."""
    if outcome == "ok":
        return False
    return status_code is None or status_code == 429 or status_code >= 500


def record_tome_call(record: object) -> None:
    """``on_call`` hook of the TOME client (a ``tokenpool_tome.client.CallRecord``); never raises."""
    try:
        namespace, operation = record.namespace, record.operation  # type: ignore[attr-defined]
        outcome = record.outcome  # type: ignore[attr-defined]
        TOME_CALLS.labels(namespace, operation, outcome).inc()
        TOME_CALL_SECONDS.labels(namespace, operation).observe(record.latency_seconds)  # type: ignore[attr-defined]
        if tome_call_unavailable(outcome=outcome, status_code=record.status_code):  # type: ignore[attr-defined]
            TOME_LAST_UNAVAILABLE.labels(namespace).set(time.time())
        else:
            TOME_LAST_OK.labels(namespace).set(time.time())
    except Exception:  # metrics must never fail a tokenization
        logger.warning("tome_call_metrics_failed", exc_info=True)


def record_leases_expired(by_consumer: dict[str, int]) -> None:
    """``pool.signals.leases_expired``: pairs retired by expiry, per consumer."""
    for consumer, count in by_consumer.items():
        PAIRS_RETIRED_EXPIRED.labels(consumer).inc(count)


def observe_request(*, endpoint: str, method: str, seconds: float) -> None:
    try:
        REQUEST_SECONDS.labels(endpoint, method).observe(seconds)
    except Exception:
        logger.warning("request_metrics_failed", exc_info=True)


def multiprocess_metrics() -> list[Metric]:
    """The summed per-process metrics of every process that wrote into the multiprocess dir."""
    registry = CollectorRegistry(auto_describe=False)
    MultiProcessCollector(registry, path=os.environ[MULTIPROC_ENV])
    return list(registry.collect())


def tome_call_totals() -> dict[tuple[str, str, str], float]:
    """(namespace, operation, outcome) -> HTTP calls to TOME, all processes on this host."""
    totals: dict[tuple[str, str, str], float] = {}
    for metric in multiprocess_metrics():
        if metric.name != "tokenpool_tome_calls":
            continue
        for sample in metric.samples:
            if sample.name == "tokenpool_tome_calls_total":
                key = (sample.labels["namespace"], sample.labels["operation"], sample.labels["outcome"])
                totals[key] = totals.get(key, 0.0) + sample.value
    return totals


def tome_last_seen() -> dict[str, dict[str, float]]:
    """namespace -> {"ok": unix time, "unavailable": unix time} (newest across processes)."""
    seen: dict[str, dict[str, float]] = {}
    names = {"tokenpool_tome_last_ok_timestamp_seconds": "ok",
             "tokenpool_tome_last_unavailable_timestamp_seconds": "unavailable"}
    for metric in multiprocess_metrics():
        kind = names.get(metric.name)
        if kind is None:
            continue
        for sample in metric.samples:
            seen.setdefault(sample.labels["namespace"], {})[kind] = sample.value
    return seen


class DatabaseCollector:
    """Pool state read from PostgreSQL at scrape time (pair counts: the trigger-kept counters, ``pool/counters.py``)."""

    def collect(self) -> Iterator[Metric]:
        # Not at module top: this module is imported by processes without Django's app registry
        # (a script recording TOME calls), and the selectors load the models.
        from monitoring.selectors import metrics_snapshot  # noqa: PLC0415 - models need the app registry

        up = GaugeMetricFamily("tokenpool_database_up", "1 when the scrape could read PostgreSQL.")
        try:
            data = metrics_snapshot()
        except Exception:
            logger.exception("metrics_database_read_failed")
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up

        pairs = GaugeMetricFamily("tokenpool_pool_pairs", "Token pairs per pool and status.",
                                  labels=["pool", "status"])
        reservations = CounterMetricFamily(
            "tokenpool_reservations", "Pairs ever handed out, by where they came from "
            "(pool: prefetched; direct: live TOME fallback).", labels=["pool", "source"])
        refills = CounterMetricFamily("tokenpool_refill_runs", "Finished refill runs by outcome.",
                                      labels=["pool", "outcome"])
        target = GaugeMetricFamily("tokenpool_pool_target_size", "Pool target size.", labels=["pool"])
        low = GaugeMetricFamily("tokenpool_pool_low_watermark", "Refill starts below this.", labels=["pool"])
        critical = GaugeMetricFamily("tokenpool_pool_critical_watermark", "Critical alert below this.",
                                     labels=["pool"])
        alerts = GaugeMetricFamily("tokenpool_alerts_open", "Open alerts by condition.",
                                   labels=["pool", "condition", "severity"])
        # The dashboard's tiles, by the same definitions (monitoring/numbers.py).
        consumption = GaugeMetricFamily("tokenpool_pool_consumption_per_hour",
                                        "Pairs handed out per hour over the last hour (the dashboard's tile).",
                                        labels=["pool"])
        refill_rate = GaugeMetricFamily("tokenpool_pool_refill_per_hour",
                                        "Pairs inserted by refills per hour over the last hour.", labels=["pool"])
        to_empty = GaugeMetricFamily("tokenpool_pool_hours_to_empty",
                                     "Hours until AVAILABLE reaches 0 at the last hour's consumption net of "
                                     "refills; absent while refills keep up.", labels=["pool"])
        calls_live = GaugeMetricFamily("tokenpool_tome_calls_live_path",
                                       "TOME calls the live path would have made for the pool's cards (3 per card).",
                                       labels=["pool"])
        calls_made = GaugeMetricFamily("tokenpool_tome_calls_made", "TOME calls made for the pool "
                                       "(refills + direct fallback).", labels=["pool"])
        for pool in data.pools:
            counts = data.counts[pool.pk]
            for status, value in counts.by_status.items():
                pairs.add_metric([pool.name, status], value)
            for source, value in counts.reservations_by_source.items():
                reservations.add_metric([pool.name, source], value)
            for outcome, value in data.refill_runs.get(pool.pk, {}).items():
                refills.add_metric([pool.name, outcome], value)
            target.add_metric([pool.name], pool.target_size)
            low.add_metric([pool.name], pool.low_watermark)
            critical.add_metric([pool.name], pool.critical_watermark)
            numbers = data.numbers[pool.pk]
            consumption.add_metric([pool.name], numbers.consumption_per_hour)
            refill_rate.add_metric([pool.name], numbers.refill_per_hour)
            if numbers.hours_to_empty is not None:
                to_empty.add_metric([pool.name], numbers.hours_to_empty)
            calls_live.add_metric([pool.name], numbers.tome_calls_live)
            calls_made.add_metric([pool.name], numbers.tome_calls_actual)
        for pool_name, condition, severity, value in data.open_alerts:
            alerts.add_metric([pool_name, condition, severity], value)
        yield from (pairs, reservations, refills, target, low, critical, alerts, consumption, refill_rate, to_empty,
                    calls_live, calls_made)


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    MultiProcessCollector(registry, path=os.environ[MULTIPROC_ENV])
    registry.register(DatabaseCollector())  # type: ignore[arg-type]
    return registry


_primed = False


def _prime_families() -> None:
    """Give every contract family a sample from the first scrape on (a fresh deployment whose
    processes have not called TOME yet must still list ``tokenpool_tome_calls_total``).

    Zero-valued children in the scraping process's own file: they add nothing to the sums."""
    global _primed
    if _primed:
        return
    for namespace in dict.fromkeys([settings.TOME_NS1, settings.TOME_NS2]):
        for operation in ("generate", "tokenize", "detokenize", "lookup"):
            for outcome in ("ok", "error"):
                TOME_CALLS.labels(namespace, operation, outcome)
    REQUEST_SECONDS.labels("/metrics", "GET")
    _primed = True


def metrics_render() -> bytes:
    """The /metrics body: multiprocess metrics plus the database-derived families."""
    _prime_families()
    return generate_latest(_registry())
