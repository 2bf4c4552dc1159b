"""Settings shared by every environment: every environment variable TokenPool reads is read in this
package (this module, ``development``, ``production``), through django-environ, and nowhere else.

``tokenpool.settings`` picks ``development`` or ``production`` by ``TOKENPOOL_ENV``; ``test`` is
``development`` for pytest. Code reads ``settings.X``.
"""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from tokenpool.settings.runstate import RUN_STATE
from tome import TOME_BATCH_LIMIT

BASE_DIR = Path(__file__).resolve().parent.parent.parent
env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False) if (BASE_DIR / ".env").exists() else None

DEBUG = env.bool("DEBUG", default=False)
# development (default: `make run`, `make test`, `manage.py` in a checkout) or production. Production
# requires a real SECRET_KEY and turns the HTTPS settings on (docs/operations.md "Security").
TOKENPOOL_ENV = env("TOKENPOOL_ENV", default="development")
if TOKENPOOL_ENV not in ("development", "production"):
    raise ImproperlyConfigured(f"TOKENPOOL_ENV must be 'development' or 'production', not {TOKENPOOL_ENV!r}")
PRODUCTION = TOKENPOOL_ENV == "production"


ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_api_key",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files served from the project, not a CDN
    "axes",  # admin login brute-force lockout (contract section 3)
    "django_q",
    "core",  # the migration history of the single-app layout; no models
    # Runtime apps, bottom floor first (docs/architecture.md).
    "tome",
    "keys",
    "pool",
    "onboarding",
    "refill",
    "monitoring",
    # Tooling (management commands only; never imported by the runtime apps).
    "devtools",
    "bench",
    "loadtest",
]

# The browser-only middleware (sessions, auth, messages, static files, the HTML CSP) is wrapped by
# api/site_middleware.py: it steps aside for /api/v1/, whose clients send an
# API key with every request, so that machinery costs them about 15 % of a reservation's Python work
# for nothing (docs/benchmarks.md, "The HTTP path"). One stack, one list; the wrappers subclass the
# middleware they wrap, so Django's and the admin's checks still find them.
MIDDLEWARE = [
    "api.middleware.DatabaseDeadlineMiddleware",  # first: every query of the request has a deadline
    "api.middleware.CorrelationIdMiddleware",
    "monitoring.middleware.RequestLogMiddleware",
    # API key verified before any /api/v1/ body byte is read; bodies bounded; Cache-Control: no-store.
    "api.middleware.ApiRequestGuardMiddleware",
    "api.errors.ApiErrorMiddleware",  # contract error bodies for everything under /api/
    "django.middleware.security.SecurityMiddleware",
    "api.site_middleware.HtmlCSPMiddleware",  # django-csp, not on JSON responses (cost, no page to protect)
    "api.site_middleware.WhiteNoiseMiddleware",
    "api.site_middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",  # by name: security.W003 looks for it; DRF views are exempt
    "api.site_middleware.AuthenticationMiddleware",
    "api.site_middleware.SessionLifetimeMiddleware",  # the absolute limit of a signed-in session
    "api.site_middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # last: turns a locked-out login into the lockout response (a no-op for /api/v1/)
]

# --- Admin login lockout: django-axes (contract section 3) --------------------------------------------
# At most AXES_FAILURE_LIMIT failures per username OR per client address within AXES_COOLOFF_TIME,
# then 429 with the lockout page. Unlock: `manage.py axes_reset` (all), `axes_reset_username NAME`,
# `axes_reset_ip ADDRESS` (docs/operations.md "Security").
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses a locked-out username/address before the password check
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=10)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]  # either one alone locks
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "admin/lockout.html"
AXES_HTTP_RESPONSE_CODE = 429
AXES_VERBOSE = False

# --- Content-Security-Policy (django-csp): the admin, the dashboard and /api/docs/ load only our own
# files (Swagger UI from drf-spectacular-sidecar). Inline styles stay allowed: the admin and Swagger
# UI set style attributes; inline scripts do not.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

# --- HTTPS (on by default in production, off for `make run` on plain http) ------------------------
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=PRODUCTION)
# Probes and scrapers talk plain http inside the deployment.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=PRODUCTION)
# Admin sessions (contract section 3; PCI DSS 8.2.8): 15 minutes idle — every request pushes the
# expiry (cookie Max-Age and the server-side row) forward, so an idle session expires on both sides —
# and 8 hours in all (api.site_middleware.SessionLifetimeMiddleware), then log in again.
SESSION_COOKIE_AGE = env.int("SESSION_IDLE_SECONDS", default=15 * 60)
SESSION_SAVE_EVERY_REQUEST = True
SESSION_ABSOLUTE_SECONDS = env.int("SESSION_ABSOLUTE_SECONDS", default=8 * 3600)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=PRODUCTION)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31_536_000 if PRODUCTION else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=PRODUCTION)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
if env("SECURE_PROXY_SSL_HEADER", default=""):  # e.g. "HTTP_X_FORWARDED_PROTO,https" behind a TLS proxy
    SECURE_PROXY_SSL_HEADER = tuple(env.list("SECURE_PROXY_SSL_HEADER"))
# Preloading HSTS is the domain owner's commitment, not this service's: not asked for by default.
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]

ROOT_URLCONF = "tokenpool.urls"
WSGI_APPLICATION = "tokenpool.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database: PostgreSQL only -------------------------------------------------------------
EMBEDDED_DATABASE_NAME = env("EMBEDDED_DATABASE_NAME", default="tokenpool")
DATABASE_URL = env("DATABASE_URL", default="")
CONN_MAX_AGE = env.int("CONN_MAX_AGE", default=60)
TEST_DATABASE_NAME = env("TEST_DATABASE_NAME", default="test_tokenpool")
DB_IDLE_IN_TX_TIMEOUT_MS = env.int("DB_IDLE_IN_TX_TIMEOUT_MS", default=60000)
DATABASE_PGBOUNCER = env.bool("DATABASE_PGBOUNCER", default=False)
# Fail fast when PostgreSQL stops answering (contract section 2: 503 database_unavailable within 5 s;
# section 3: /readyz within 2 s). A frozen server's kernel still accepts and acknowledges, so only
# client-side limits help: libpq's connect_timeout (whole connection start-up, at least 2 s) and a
# per-query deadline on the request path (common/postgresql/deadline.py). Background work (refills,
# migrations) has no query deadline; a server-side lock_timeout keeps any session from queueing
# forever behind a lock.
DB_CONNECT_TIMEOUT_SECONDS = env.int("DB_CONNECT_TIMEOUT_SECONDS", default=2)
DB_REQUEST_QUERY_TIMEOUT_SECONDS = env.float("DB_REQUEST_QUERY_TIMEOUT_SECONDS", default=3.0)
DB_READINESS_TIMEOUT_SECONDS = env.float("DB_READINESS_TIMEOUT_SECONDS", default=1.0)
DB_LOCK_TIMEOUT_MS = env.int("DB_LOCK_TIMEOUT_MS", default=30000)


def database_settings(default: dict) -> dict:
    """The one database's settings around its connection parameters (``default``: from DATABASE_URL,
    or the embedded server's socket in development)."""
    database = dict(default)
    database.setdefault("CONN_MAX_AGE", CONN_MAX_AGE)
    database["CONN_HEALTH_CHECKS"] = True
    # Django's PostgreSQL backend, but the per-request health check polls the idle socket instead of a
    # SELECT 1 round trip (common/postgresql/base.py says why that sees what the check is for).
    database["ENGINE"] = "common.postgresql"
    database.setdefault("TEST", {})["NAME"] = TEST_DATABASE_NAME
    options = database.setdefault("OPTIONS", {})
    # A session left idle inside a transaction holds back VACUUM and slows every reservation claim
    # (see docs/architecture.md); cut such sessions off server-side.
    options.setdefault("options", f"-c idle_in_transaction_session_timeout={DB_IDLE_IN_TX_TIMEOUT_MS}"
                                  f" -c lock_timeout={DB_LOCK_TIMEOUT_MS}")
    options.setdefault("connect_timeout", DB_CONNECT_TIMEOUT_SECONDS)
    # TCP connections (DATABASE_URL with a host): a peer that vanished is noticed in ~25 s, not hours.
    options.setdefault("keepalives", 1)
    options.setdefault("keepalives_idle", 10)
    options.setdefault("keepalives_interval", 5)
    options.setdefault("keepalives_count", 3)
    # Behind PgBouncer in transaction mode (DATABASE_URL points at it; docs/operations.md "Scaling out"):
    # a session is only ours for one transaction, so nothing may outlive one. Server-side cursors (WITH
    # HOLD) would; psycopg's server-side prepared statements stay off as Django's default has them
    # (prepare_threshold=None: PgBouncer < 1.21 cannot route them; Debian ships 1.18); and PgBouncer
    # refuses the `options` startup parameter, so the idle-in-transaction cut-off moves to the server
    # (ALTER DATABASE … SET idle_in_transaction_session_timeout) or PgBouncer's idle_transaction_timeout.
    if DATABASE_PGBOUNCER:
        database["DISABLE_SERVER_SIDE_CURSORS"] = True
        options.pop("options", None)
        options["prepare_threshold"] = None
    return database


SECRET_KEY_FROM_ENV = env("SECRET_KEY", default="")
# Placeholders refused whenever DEBUG is off: Django's "django-insecure-…", our old dev default and the
# "change-me-in-production" kind a compose file or .env template ships. A key anyone can read is no secret.
SECRET_KEY_PLACEHOLDER_MARKERS = ("insecure", "change-me", "changeme")


def secret_key_is_placeholder(key: str) -> bool:
    return any(marker in key.lower() for marker in SECRET_KEY_PLACEHOLDER_MARKERS)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "staticfiles"
# Files served at the site root (/favicon.ico) by WhiteNoise, beside the static files.
WHITENOISE_ROOT = BASE_DIR / "tokenpool" / "site_root"

DATA_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024  # contract: bodies over 64 KiB → 413 payload_too_large

# --- TOME upstream -------------------------------------------------------------------------
# As devtools/runner.py derives it; unset, the running `make run`'s (var/run.json): every manage.py reaches its TOME.
TOME_PORT = env.int("TOME_PORT", default=RUN_STATE.get("tome_port") or 8900)
TOME_BASE_URL = env("TOME_BASE_URL", default=("" if "TOME_PORT" in env.ENVIRON else RUN_STATE.get("tome_base_url"))
                    or f"http://127.0.0.1:{TOME_PORT}")
TOME_API_TOKEN = env("TOME_API_TOKEN", default="dev-tome-token")
TOME_NS1 = env("TOME_NS1", default="ns1")
TOME_NS2 = env("TOME_NS2", default="ns2")
TOME_CONNECT_TIMEOUT = env.float("TOME_CONNECT_TIMEOUT", default=1.0)
TOME_READ_TIMEOUT = env.float("TOME_READ_TIMEOUT", default=2.0)
TOME_POOL_TIMEOUT = env.float("TOME_POOL_TIMEOUT", default=1.0)
TOME_MAX_ATTEMPTS = env.int("TOME_MAX_ATTEMPTS", default=3)
TOME_BREAKER_FAILURES = env.int("TOME_BREAKER_FAILURES", default=5)
TOME_BREAKER_RESET_SECONDS = env.float("TOME_BREAKER_RESET_SECONDS", default=15.0)
# The request path's TOME budget (the reservation fallback): a client waits 5 s by default
# (tokenpool_tome), so a hung TOME must answer 503 pool_unavailable within 3 s. The fallback makes two
# sequential calls (NS1 generate, NS2 tokenize); each gets one attempt of at most connect + read time.
# The refill keeps the TOME_* budget above (its retries make a flapping TOME's batches succeed).
TOME_REQUEST_CONNECT_TIMEOUT = env.float("TOME_REQUEST_CONNECT_TIMEOUT", default=0.5)
TOME_REQUEST_READ_TIMEOUT = env.float("TOME_REQUEST_READ_TIMEOUT", default=1.0)
TOME_REQUEST_MAX_ATTEMPTS = env.int("TOME_REQUEST_MAX_ATTEMPTS", default=1)
# What this deployment sends per TOME call; at most TOME's documented limit (tome.TOME_BATCH_LIMIT).
TOME_MAX_BATCH = env.int("TOME_MAX_BATCH", default=TOME_BATCH_LIMIT)

# --- REST framework / OpenAPI ----------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "TokenPool API",
    "DESCRIPTION": "Prefetched TOME token pairs: reserve, confirm, release, lookup, detokenize.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI from drf-spectacular-sidecar (static files of this project): /api/docs/ works offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Two `source` vocabularies: a reservation comes from the pool or the live fallback, a looked-up
    # pair from the pool or a TOME passthrough.
    "ENUM_NAME_OVERRIDES": {
        "ReservationSourceEnum": ["pool", "direct"],
        "PairSourceEnum": ["pool", "tome"],
    },
}
API_KEY_CUSTOM_HEADER = "HTTP_AUTHORIZATION"
API_THROTTLE_RATE_PER_SECOND = env.int("API_THROTTLE_RATE_PER_SECOND", default=1000)
API_AUTH_FAILURE_RATE_PER_MINUTE = env.int("API_AUTH_FAILURE_RATE_PER_MINUTE", default=60)
# Where the client's address is, for that limit: the header the edge proxy sets (its last entry; the
# application server is reachable only through the proxy). Empty: REMOTE_ADDR.
API_CLIENT_ADDRESS_HEADER = env("API_CLIENT_ADDRESS_HEADER", default="HTTP_X_FORWARDED_FOR")
# Verified API keys are cached in process this long; a revoked key stops working within it.
API_KEY_CACHE_SECONDS = env.float("API_KEY_CACHE_SECONDS", default=5.0)
# How long the key cache remembers that a digest belonged to a valid key (KeyCache.recently_verified).
# Since issue 20 auth no longer needs it: a valid secret is never throttled (api/auth.py).
API_KEY_KNOWN_SECONDS = env.float("API_KEY_KNOWN_SECONDS", default=900.0)
# While PostgreSQL is unreachable: one ERROR line with a stack per this many seconds (503s meanwhile).
DATABASE_ERROR_LOG_SECONDS = env.float("DATABASE_ERROR_LOG_SECONDS", default=30.0)

# --- Shared state between processes (contract §1: REDIS_URL; docs/operations.md "Scaling out") ---
# REDIS_URL set: Redis is the django-q2 broker and the shared cache (rate limits). Unset: everything
# shared lives in PostgreSQL. Q_REDIS_URL is the old name, still read, deprecated.
REDIS_URL = env("REDIS_URL", default="")
if not REDIS_URL and env("Q_REDIS_URL", default=""):
    import warnings

    warnings.warn("Q_REDIS_URL is deprecated: set REDIS_URL (it also moves the shared limits to Redis).",
                  FutureWarning, stacklevel=1)
    REDIS_URL = env("Q_REDIS_URL")
if REDIS_URL:
    CACHES = {"default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": env("REDIS_KEY_PREFIX", default="tokenpool"),
        # Fail fast: a stalled Redis must not stall requests (the limiter falls back, keys/limits.py).
        "OPTIONS": {"socket_connect_timeout": 1.0, "socket_timeout": 1.0},
    }}
else:
    # Per process. Room for the lookup negative cache of a few full batches (the default is 300).
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                          "OPTIONS": {"MAX_ENTRIES": 100_000}}}
# Per-key and failed-authentication limits: redis | postgres | local (per process; one process only).
SHARED_LIMITS_BACKEND = env("SHARED_LIMITS_BACKEND", default="redis" if REDIS_URL else "postgres")
# How often each process compares the shared API-key generation (revocations) with its cache.
API_KEY_REVOCATION_CHECK_SECONDS = env.float("API_KEY_REVOCATION_CHECK_SECONDS", default=1.0)
# Lookup/detokenize misses TOME did not know are answered from the cache this long (no TOME call),
# and repeated identical refusals of one key are audited as one aggregate row per request.
LOOKUP_NEGATIVE_CACHE_SECONDS = env.int("LOOKUP_NEGATIVE_CACHE_SECONDS", default=60)

# --- django-q2 (ORM broker by default; Redis broker when REDIS_URL is set) ---------------------
Q_CLUSTER = {
    "name": "tokenpool",
    "workers": env.int("Q_WORKERS", default=2),
    "timeout": env.int("Q_TIMEOUT", default=600),
    "retry": env.int("Q_RETRY", default=720),  # must exceed timeout or a slow refill runs twice
    "max_attempts": 1,
    "catch_up": False,
    "poll": 0.5,
    "orm": "default",
    "ack_failures": True,
    "save_limit": 500,
}
if REDIS_URL:
    Q_CLUSTER.pop("orm")
    Q_CLUSTER["redis"] = REDIS_URL

# --- Pools (pool) -----------------------------------------------------------------------------
# Pool rows are cached in process this long on the reservation path; an edit saved by another
# process applies within it (edits in this process at once).
POOL_CACHE_SECONDS = env.float("POOL_CACHE_SECONDS", default=5.0)

# --- Refill (refill, docs/refill.md) --------------------------------------------------------
REFILL_TIME_BUDGET_SECONDS = env.float("REFILL_TIME_BUDGET_SECONDS", default=300.0)  # < Q_TIMEOUT
REFILL_BATCH_ATTEMPTS = env.int("REFILL_BATCH_ATTEMPTS", default=3)
REFILL_BACKOFF_INITIAL_SECONDS = env.float("REFILL_BACKOFF_INITIAL_SECONDS", default=0.5)
REFILL_BACKOFF_MAX_SECONDS = env.float("REFILL_BACKOFF_MAX_SECONDS", default=8.0)
REFILL_TRIGGER_MIN_INTERVAL_SECONDS = env.float("REFILL_TRIGGER_MIN_INTERVAL_SECONDS", default=1.0)
REFILL_QUEUE_LEASE_SECONDS = env.float("REFILL_QUEUE_LEASE_SECONDS", default=300.0)
REFILL_RUN_LEASE_SECONDS = env.float("REFILL_RUN_LEASE_SECONDS", default=120.0)
# A frozen or hung refill's lock session ends after this long untouched (refill/services/lock.py).
REFILL_LOCK_IDLE_SECONDS = env.float("REFILL_LOCK_IDLE_SECONDS", default=20.0)
REFILL_COOLDOWN_SECONDS = env.float("REFILL_COOLDOWN_SECONDS", default=60.0)

# --- Onboarding go-live projection (onboarding/projection.py) ---------------------------------
# Non-working days besides Saturdays and Sundays: comma-separated ISO dates (public holidays, freezes).
ONBOARDING_HOLIDAYS = env.list("ONBOARDING_HOLIDAYS", default=[])
# Approval lead time per environment approval in working days (likely, late) until this deployment has
# observed decisions: the plan's "process/approvals ... may take 1-2 weeks".
ONBOARDING_APPROVAL_LEAD_DAYS = (env.float("ONBOARDING_APPROVAL_LEAD_LIKELY_DAYS", default=5.0),
                                 env.float("ONBOARDING_APPROVAL_LEAD_LATE_DAYS", default=10.0))
# The late bound stretches every remaining estimate by this factor.
ONBOARDING_LATE_EFFORT_FACTOR = env.float("ONBOARDING_LATE_EFFORT_FACTOR", default=1.5)

# --- E-mail and alert webhooks -------------------------------------------------------------
EMAIL_BACKEND = env("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="tokenpool@localhost")
ALERT_EMAILS = env.list("ALERT_EMAILS", default=[])
ALERT_WEBHOOK_URL = env("ALERT_WEBHOOK_URL", default="")
ALERT_REFILL_FAILURES = env.int("ALERT_REFILL_FAILURES", default=3)  # consecutive failed runs
ALERT_DIRECT_WINDOW_MINUTES = env.int("ALERT_DIRECT_WINDOW_MINUTES", default=15)
ALERT_EVALUATE_MINUTES = env.int("ALERT_EVALUATE_MINUTES", default=1)
ALERT_WEBHOOK_ATTEMPTS = env.int("ALERT_WEBHOOK_ATTEMPTS", default=4)
ALERT_WEBHOOK_BACKOFF_SECONDS = env.float("ALERT_WEBHOOK_BACKOFF_SECONDS", default=0.5)

# --- Monitoring (docs/operations.md) ----------------------------------------------------------
# prometheus_client multiprocess mode: must be exported before anything imports prometheus_client.
# Exported by each environment's module (monitoring.multiproc): development uses var/prometheus, test a
# private temporary directory per run; an explicit value wins.
PROMETHEUS_MULTIPROC_DIR_FROM_ENV = (env("PROMETHEUS_MULTIPROC_DIR", default="")
                                     or env("prometheus_multiproc_dir", default=""))
MONITORING_SNAPSHOT_MINUTES = env.int("MONITORING_SNAPSHOT_MINUTES", default=5)
MONITORING_SNAPSHOT_RETENTION_DAYS = env.int("MONITORING_SNAPSHOT_RETENTION_DAYS", default=35)

# The process-level settings (logging, the edge proxy, the application server, `make run`'s runner)
# live in processes.py, read the same way; imported here so every environment layer has them.
from tokenpool.settings.processes import *  # noqa: E402, F403
