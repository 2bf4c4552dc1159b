"""Development (the default: ``make run``, ``make test``, ``manage.py`` in a checkout): the embedded
PostgreSQL under ``var/pgdata`` when ``DATABASE_URL`` is unset (started on demand, so every process of
a checkout shares one server), a random secret key kept per checkout, metrics under ``var/``."""
import os
import secrets

from devtools.embedded_db import embedded_database_settings
from monitoring.multiproc import multiproc_dir_configure
from tokenpool.settings import base
from tokenpool.settings.base import *  # noqa: F403 - the environment layers extend the shared base


def _secret_key() -> str:
    """SECRET_KEY from the environment; without one, a random key made once per checkout and kept in
    var/secret-key.txt (0600), so no two checkouts share a key and none is in git."""
    if base.SECRET_KEY_FROM_ENV:
        if not base.DEBUG and base.secret_key_is_placeholder(base.SECRET_KEY_FROM_ENV):
            raise base.ImproperlyConfigured("SECRET_KEY is a published development default or placeholder; "
                                            "set a random one "
                                            "(python -c 'import secrets; print(secrets.token_urlsafe(50))').")
        return base.SECRET_KEY_FROM_ENV
    path = base.BASE_DIR / "var" / "secret-key.txt"
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


SECRET_KEY = _secret_key()
DATABASES = {"default": base.database_settings(
    base.env.db("DATABASE_URL") if base.DATABASE_URL else embedded_database_settings(base.EMBEDDED_DATABASE_NAME))}
PROMETHEUS_MULTIPROC_DIR = multiproc_dir_configure(configured=base.PROMETHEUS_MULTIPROC_DIR_FROM_ENV,
                                                   default=base.BASE_DIR / "var" / "prometheus")
