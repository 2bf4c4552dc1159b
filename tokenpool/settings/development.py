"""Development (the default: ``make run``, ``make test``, ``manage.py`` in a checkout): the embedded
PostgreSQL under ``var/pgdata`` when ``DATABASE_URL`` is unset (started on demand, so every process of
a checkout shares one server), a random secret key kept per checkout, metrics under ``var/``."""
import os
import secrets

from devtools.embedded_db import ensure_database, socket_dir
from monitoring.multiproc import multiproc_dir_configure
from tokenpool.settings.base import *  # noqa: F403 - the environment layers extend the shared base
from tokenpool.settings.base import (
    BASE_DIR,
    DATABASE_URL,
    DEBUG,
    EMBEDDED_DATABASE_NAME,
    PROMETHEUS_MULTIPROC_DIR_FROM_ENV,
    SECRET_KEY_FROM_ENV,
    SECRET_KEY_PLACEHOLDER_MARKERS,
    ImproperlyConfigured,
    database_settings,
    env,
)


def _secret_key() -> str:
    """SECRET_KEY from the environment; without one, a random key made once per checkout and kept in
    var/secret-key.txt (0600), so no two checkouts share a key and none is in git."""
    if SECRET_KEY_FROM_ENV:
        if not DEBUG and any(marker in SECRET_KEY_FROM_ENV.lower() for marker in SECRET_KEY_PLACEHOLDER_MARKERS):
            raise ImproperlyConfigured("SECRET_KEY is a published development default or placeholder; set a random "
                                       "one (python -c 'import secrets; print(secrets.token_urlsafe(50))').")
        return SECRET_KEY_FROM_ENV
    path = BASE_DIR / "var" / "secret-key.txt"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".secret-key.{os.getpid()}")
        temporary.write_text(secrets.token_urlsafe(50))
        temporary.chmod(0o600)
        try:
            os.link(temporary, path)  # atomic: concurrent first starts agree on one key
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
    return path.read_text().strip()


def _embedded_database() -> dict:
    ensure_database(EMBEDDED_DATABASE_NAME)
    return {"ENGINE": "django.db.backends.postgresql", "NAME": EMBEDDED_DATABASE_NAME, "USER": "postgres",
            "PASSWORD": "", "HOST": str(socket_dir())}


SECRET_KEY = _secret_key()
DATABASES = {"default": database_settings(env.db("DATABASE_URL") if DATABASE_URL else _embedded_database())}
PROMETHEUS_MULTIPROC_DIR = multiproc_dir_configure(configured=PROMETHEUS_MULTIPROC_DIR_FROM_ENV,
                                                   default=BASE_DIR / "var" / "prometheus")
