"""Command-line options shared by ``python -m devtools.tome_emulator`` and ``manage.py tome_emulator``."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

from devtools import embedded_db
from devtools.tome_emulator import tokens as token_shapes
from devtools.tome_emulator.faults import ERROR_CODES, Faults, FaultSettings, InvalidFaults
from devtools.tome_emulator.server import EmulatorConfig, serve
from devtools.tome_emulator.vault import Vault, default_database_url

DEFAULT_NAMESPACES = ("ns1:numeric16", "ns2:prefixed:ext_")
logger = logging.getLogger("tome.emulator")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument("--host", default=env("TOME_EMULATOR_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env("TOME_EMULATOR_PORT", "8900")))
    parser.add_argument("--database-url", default=None,
                        help="PostgreSQL URL of the vault; default TOME_EMULATOR_DATABASE_URL, else a "
                             "'tome_emulator' database on DATABASE_URL's server or the embedded one")
    parser.add_argument("--client-token", action="append", dest="client_tokens", default=None,
                        help="accepted client bearer token (repeatable; default dev-tome-token)")
    parser.add_argument("--admin-token", default=env("TOME_EMULATOR_ADMIN_TOKEN", "dev-tome-admin"))
    parser.add_argument("--namespace", action="append", dest="namespaces", default=None,
                        metavar="NAME:FORMAT[:PREFIX]",
                        help="namespace to ensure at start-up (repeatable; default "
                             + " ".join(DEFAULT_NAMESPACES) + ")")
    parser.add_argument("--max-batch", type=int, default=5000)
    parser.add_argument("--db-pool-size", type=int, default=8)
    parser.add_argument("--latency-ms", type=int, default=0)
    parser.add_argument("--jitter-ms", type=int, default=0)
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--error-status", type=int, default=503, choices=sorted(ERROR_CODES))
    parser.add_argument("--timeout-rate", type=float, default=0.0)
    parser.add_argument("--timeout-seconds", type=float, default=30.0)
    parser.add_argument("--outage", action="store_true")


def parse_namespace(spec: str) -> tuple[str, str, str]:
    """'ns1:numeric16' or 'ns2:prefixed[:ext_]' → (name, format, prefix)."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or parts[1] not in token_shapes.FORMATS:
        raise ValueError(f"bad --namespace {spec!r}: expected NAME:numeric16 or NAME:prefixed[:PREFIX]")
    name, token_format = parts[0], parts[1]
    if token_format == "numeric16":
        if len(parts) == 3 and parts[2]:
            raise ValueError(f"bad --namespace {spec!r}: numeric16 takes no prefix")
        return name, token_format, ""
    return name, token_format, parts[2] if len(parts) == 3 else token_shapes.DEFAULT_PREFIX


class _JsonLines(logging.Formatter):
    """One JSON object per line; the emulator never passes values or tokens to its logger."""

    _skip = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(),
            "level": record.levelname, "logger": record.name, "event": record.getMessage(),
        }
        payload.update({k: v for k, v in vars(record).items() if k not in self._skip})
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonLines())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("psycopg.pool").setLevel(logging.WARNING)


def run(options: dict[str, Any]) -> None:
    """Build everything from parsed options and serve in the foreground until SIGTERM/SIGINT."""
    try:
        namespaces = [parse_namespace(spec) for spec in options.get("namespaces") or DEFAULT_NAMESPACES]
        faults = Faults(FaultSettings())
        faults.update({
            "latency_ms": options["latency_ms"], "jitter_ms": options["jitter_ms"],
            "error_rate": options["error_rate"], "error_status": options["error_status"],
            "timeout_rate": options["timeout_rate"], "timeout_seconds": options["timeout_seconds"],
            "outage": bool(options["outage"]),
        })
    except (ValueError, InvalidFaults) as exc:
        raise SystemExit(f"tome emulator: {exc}") from None
    if options["max_batch"] < 1:
        raise SystemExit("tome emulator: --max-batch must be at least 1")
    client_tokens = tuple(options.get("client_tokens") or
                          os.environ.get("TOME_EMULATOR_CLIENT_TOKENS", "dev-tome-token").split(","))
    config = EmulatorConfig(host=options["host"], port=options["port"], client_tokens=client_tokens,
                            admin_token=options["admin_token"], max_batch=options["max_batch"])
    vault = Vault(database_url=options.get("database_url") or default_database_url(),
                  pool_size=options["db_pool_size"])
    # Standalone (not under `make run`): the embedded PostgreSQL this process started stops with it.
    embedded_db.on_exit("stop")
    try:
        serve(config=config, vault=vault, faults=faults, namespaces=namespaces)
    except OSError as exc:  # typically the port is taken
        raise SystemExit(f"tome emulator on {config.host}:{config.port}: {exc}") from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devtools.tome_emulator",
                                     description="Run the TOME emulator (see docs/tome-api.md).")
    add_arguments(parser)
    parser.add_argument("--log-level", default=os.environ.get("TOME_EMULATOR_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    run(vars(args))
