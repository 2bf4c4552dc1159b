"""Production (``TOKENPOOL_ENV=production``): a real SECRET_KEY is required and the HTTPS settings are
on by default (base.py reads them; docs/operations.md "Security")."""
from monitoring.multiproc import multiproc_dir_configure
from tokenpool.settings import base
from tokenpool.settings.base import *  # noqa: F403 - the environment layers extend the shared base


def _secret_key() -> str:
    key = base.SECRET_KEY_FROM_ENV
    if not key:
        raise base.ImproperlyConfigured("SECRET_KEY must be set when TOKENPOOL_ENV=production.")
    if base.secret_key_is_placeholder(key):
        raise base.ImproperlyConfigured("SECRET_KEY is a published development default or placeholder; set a random "
                                        "one (python -c 'import secrets; print(secrets.token_urlsafe(50))').")
    if len(key) < 50 or len(set(key)) < 5:
        raise base.ImproperlyConfigured("SECRET_KEY must be at least 50 random characters in production.")
    return key


def _database() -> dict:
    if base.DATABASE_URL:
        return base.env.db("DATABASE_URL")
    # A checkout run with TOKENPOOL_ENV=production (manage.py check --deploy) still finds its embedded
    # server; a real deployment sets DATABASE_URL and never loads the tooling.
    from devtools.embedded_db import embedded_database_settings  # noqa: PLC0415 - tooling only without DATABASE_URL

    return embedded_database_settings(base.EMBEDDED_DATABASE_NAME)


SECRET_KEY = _secret_key()
DATABASES = {"default": base.database_settings(_database())}
PROMETHEUS_MULTIPROC_DIR = multiproc_dir_configure(configured=base.PROMETHEUS_MULTIPROC_DIR_FROM_ENV,
                                                   default=base.BASE_DIR / "var" / "prometheus")
