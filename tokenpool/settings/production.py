"""Production (``TOKENPOOL_ENV=production``): a real SECRET_KEY is required and the HTTPS settings are
on by default (base.py reads them; docs/operations.md "Security")."""
from monitoring.multiproc import multiproc_dir_configure
from tokenpool.settings.base import *  # noqa: F403 - the environment layers extend the shared base
from tokenpool.settings.base import (
    BASE_DIR,
    DATABASE_URL,
    EMBEDDED_DATABASE_NAME,
    PROMETHEUS_MULTIPROC_DIR_FROM_ENV,
    SECRET_KEY_FROM_ENV,
    SECRET_KEY_PLACEHOLDER_MARKERS,
    ImproperlyConfigured,
    database_settings,
    env,
)


def _secret_key() -> str:
    if not SECRET_KEY_FROM_ENV:
        raise ImproperlyConfigured("SECRET_KEY must be set when TOKENPOOL_ENV=production.")
    if any(marker in SECRET_KEY_FROM_ENV.lower() for marker in SECRET_KEY_PLACEHOLDER_MARKERS):
        raise ImproperlyConfigured("SECRET_KEY is a published development default or placeholder; set a random "
                                   "one (python -c 'import secrets; print(secrets.token_urlsafe(50))').")
    if len(SECRET_KEY_FROM_ENV) < 50 or len(set(SECRET_KEY_FROM_ENV)) < 5:
        raise ImproperlyConfigured("SECRET_KEY must be at least 50 random characters in production.")
    return SECRET_KEY_FROM_ENV


def _database() -> dict:
    if DATABASE_URL:
        return env.db("DATABASE_URL")
    # A checkout run with TOKENPOOL_ENV=production (manage.py check --deploy) still finds its embedded
    # server; a real deployment sets DATABASE_URL.
    from devtools.embedded_db import ensure_database, socket_dir  # noqa: PLC0415 - tooling only without DATABASE_URL

    ensure_database(EMBEDDED_DATABASE_NAME)
    return {"ENGINE": "django.db.backends.postgresql", "NAME": EMBEDDED_DATABASE_NAME, "USER": "postgres",
            "PASSWORD": "", "HOST": str(socket_dir())}


SECRET_KEY = _secret_key()
DATABASES = {"default": database_settings(_database())}
PROMETHEUS_MULTIPROC_DIR = multiproc_dir_configure(configured=PROMETHEUS_MULTIPROC_DIR_FROM_ENV,
                                                   default=BASE_DIR / "var" / "prometheus")
