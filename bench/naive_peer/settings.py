"""Settings of the naive peer (issue 13 §4): close to ``startproject``'s, trimmed to an API.

What a team keeps for a JSON API behind a load balancer, and why:
- apps: contenttypes + auth (DRF's request.user machinery imports them) and rest_framework; no admin,
  sessions, messages or staticfiles (nothing here renders HTML or logs anyone in);
- middleware: SecurityMiddleware (HTTPS headers) and CommonMiddleware (ALLOWED_HOSTS, slashes), the
  two of startproject's list that apply to an API; CSRF, sessions, auth, messages and clickjacking
  serve browsers with cookies, which this API has none of (DRF's APIView is csrf_exempt anyway);
- DRF: JSON in and out only (the browsable API would need templates and staticfiles), our API-key
  authentication (authentication.py);
- persistent connections (CONN_MAX_AGE), as any team sets them once they look at latency.

Database: ``NAIVE_PEER_DATABASE_URL`` (the bench passes its own database, a test database too),
else ``DATABASE_URL``, else the embedded PostgreSQL TokenPool's settings use. Tables are found
through ``search_path`` = ``NAIVE_PEER_SCHEMA`` (schema.py creates them).
"""
from __future__ import annotations

import secrets

import environ

env = environ.Env()

DEBUG = False
SECRET_KEY = env("NAIVE_PEER_SECRET_KEY", default="") or secrets.token_urlsafe(50)  # nothing here is signed
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "rest_framework",
    "bench.naive_peer",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
]
ROOT_URLCONF = "bench.naive_peer.urls"
WSGI_APPLICATION = "bench.naive_peer.wsgi.application"

_url = env("NAIVE_PEER_DATABASE_URL", default="") or env("DATABASE_URL", default="")
if not _url:
    from devtools.embedded_db import ensure_database

    _url = ensure_database(env("EMBEDDED_DATABASE_NAME", default="tokenpool"))
DATABASES = {"default": env.db_url_config(_url)}
DATABASES["default"]["CONN_MAX_AGE"] = 60
_SCHEMA = env("NAIVE_PEER_SCHEMA", default="naive_peer")
DATABASES["default"].setdefault("OPTIONS", {})["options"] = f"-c search_path={_SCHEMA}"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

USE_TZ = True
TIME_ZONE = "UTC"

REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_AUTHENTICATION_CLASSES": ["bench.naive_peer.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["bench.naive_peer.authentication.HasApiKey"],
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="WARNING")},
}
