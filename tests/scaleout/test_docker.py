"""docker/: no Docker engine runs here, so the files are checked for what would break a `docker compose
up`: they parse, every command the image runs exists in the project, the web image runs the server
command of `make run`, and the services' environment points where the services are."""
from __future__ import annotations

import configparser
import json
import re
import runpy
import secrets
import shlex
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from devtools.edge import docker_caddyfile
from devtools.runner import web_command
from tests.fixtures.processes import ROOT

DOCKER = ROOT / "docker"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def _dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    lines, current = [], ""
    for raw in path.read_text().splitlines():
        if raw.lstrip().startswith("#") or not raw.strip():
            continue
        current += raw.rstrip("\\").strip() + " "
        if not raw.rstrip().endswith("\\"):
            word, _, rest = current.strip().partition(" ")
            lines.append((word.upper(), rest.strip()))
            current = ""
    return lines


def _cmd(path: Path) -> list[str]:
    return json.loads(next(rest for word, rest in _dockerfile_instructions(path) if word == "CMD"))


def test_the_image_runs_the_web_server_command_of_make_run():
    """Same argv as devtools/runner.py's web_command (the one config file), but listening on every
    interface of the container: only the proxy service is published."""
    expected = web_command(port=8000, host="0.0.0.0", workers=2, threads=8)
    assert expected[1:3] == ["-m", "gunicorn"]
    assert _cmd(DOCKER / "Dockerfile") == ["gunicorn", *expected[3:]]
    assert (ROOT / expected[expected.index("--config") + 1]).is_file()


def test_the_proxy_serves_https_only_with_the_generated_caddyfile(compose):
    """docker/Caddyfile is devtools/edge.py's output; compose publishes only the proxy, which redirects
    plain HTTP and sends HSTS; Django trusts the proxy's X-Forwarded-Proto."""
    assert (DOCKER / "Caddyfile").read_text() == docker_caddyfile()
    text = docker_caddyfile()
    assert "auto_https off" not in text and "disable_redirects" not in text
    assert "Strict-Transport-Security" in text and "reverse_proxy web:8000 web-2:8000" in text
    services = compose["services"]
    published = sorted(name for name, service in services.items() if service.get("ports"))
    assert published == ["proxy", "tome-emulator"]
    assert sorted(services["proxy"]["ports"]) == ["443:443", "80:80"]
    env = services["web"]["environment"]
    assert env["SECURE_PROXY_SSL_HEADER"] == "HTTP_X_FORWARDED_PROTO,https"
    assert not any(key in env for key in ("SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE", "SECURE_HSTS_SECONDS"))


def test_copied_paths_and_build_files_exist(compose):
    for service in compose["services"].values():
        build = service.get("build")
        if build:
            dockerfile = (DOCKER / build["context"] / build["dockerfile"]).resolve()
            assert dockerfile.is_file(), dockerfile
            for word, rest in _dockerfile_instructions(dockerfile):
                if word == "COPY" and not rest.startswith("--from"):
                    for source in shlex.split(rest)[:-1]:
                        assert source == "." or (DOCKER / build["context"] / source).exists(), source


def _manage_commands(service: dict) -> list[str]:
    command = service.get("command")
    if not command:
        return []
    text = command[-1] if command[:2] == ["sh", "-c"] else " ".join(command)
    return re.findall(r"manage\.py\s+([a-z_]+)", text)


def test_every_manage_py_command_the_services_run_exists(compose):
    from django.core.management import get_commands

    known = get_commands()
    used = [name for service in compose["services"].values() for name in _manage_commands(service)]
    assert {"migrate", "qcluster", "tome_emulator", "load_onboarding_plan"} <= set(used)
    assert [name for name in used if name not in known] == []


def test_depends_on_names_real_services(compose):
    services = compose["services"]
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, (name, dependency)


def _app_services(compose: dict) -> dict[str, dict]:
    return {n: s for n, s in compose["services"].items() if s.get("build", {}).get("dockerfile") == "docker/Dockerfile"}


def test_two_web_replicas_behind_pgbouncer_with_redis(compose):
    services = compose["services"]
    webs = [n for n, s in _app_services(compose).items() if "command" not in s]  # the image's CMD: web
    assert len(webs) == 2
    assert not any(services[n].get("ports") for n in webs)  # reachable through the proxy only
    assert f"reverse_proxy {' '.join(f'{n}:8000' for n in webs)}" in (DOCKER / "Caddyfile").read_text()
    ini = configparser.ConfigParser(strict=False, inline_comment_prefixes=(";",))
    ini.read(DOCKER / "pgbouncer" / "pgbouncer.ini")
    assert ini["pgbouncer"]["pool_mode"] == "transaction"
    bouncer_port = int(ini["pgbouncer"]["listen_port"])
    for name in [*webs, "qcluster"]:
        env = services[name]["environment"]
        db = urlsplit(env["DATABASE_URL"])
        assert (db.hostname, db.port) == ("pgbouncer", bouncer_port), name
        assert env["DATABASE_PGBOUNCER"] == "1", name  # what transaction pooling needs from Django
        assert db.path.lstrip("/") in ini["databases"], name
        assert urlsplit(env["REDIS_URL"]).hostname == "redis", name
    # PgBouncer's target is the postgres service, with a user it knows.
    target = dict(part.split("=", 1) for part in ini["databases"]["tokenpool"].split())
    assert target["host"] in services and target["host"] == "postgres"
    users = [line.split()[0].strip('"') for line in (DOCKER / "pgbouncer" / "userlist.txt").read_text().splitlines()]
    assert urlsplit(services["web"]["environment"]["DATABASE_URL"]).username in users


def test_every_url_in_the_environment_names_a_service(compose):
    services = compose["services"]
    for name, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            if isinstance(value, str) and "://" in value and not value.startswith("$"):
                assert urlsplit(value).hostname in services, (name, key, value)


def test_secret_key_has_no_default_so_compose_refuses_to_start_without_one(compose):
    """`${VAR:?message}` makes `docker compose up` fail when SECRET_KEY is unset or empty; a `${VAR:-default}`
    or a literal would run every deployment that forgot it on a key published in this repository."""
    keys = {name: service["environment"]["SECRET_KEY"] for name, service in _app_services(compose).items()}
    assert set(keys) >= {"web", "web-2", "qcluster", "migrate", "tome-emulator"}
    for name, value in keys.items():
        assert re.fullmatch(r"\$\{SECRET_KEY:\?[^}]+\}", value), (name, value)


def test_schema_changes_go_straight_to_postgres(compose):
    """DDL and CREATE DATABASE are not for a transaction pooler: migrate and the emulator go direct."""
    for name in ("migrate", "tome-emulator"):
        assert urlsplit(compose["services"][name]["environment"]["DATABASE_URL"]).hostname == "postgres"


# What TOKENPOOL_ENV=production turns on; compose, served over HTTPS by the proxy, keeps all of it.
HTTPS_ON = {"SECURE_SSL_REDIRECT": True, "SESSION_COOKIE_SECURE": True, "CSRF_COOKIE_SECURE": True,
            "SECURE_HSTS_SECONDS": 31_536_000, "SECURE_HSTS_INCLUDE_SUBDOMAINS": True}


def test_every_django_process_runs_in_production_mode_behind_the_https_proxy(compose, monkeypatch):
    """A deployment from compose gets production's SECRET_KEY rules and HTTPS settings, and takes the
    scheme from the proxy's X-Forwarded-Proto."""
    for name, service in _app_services(compose).items():
        env = service["environment"]
        assert env["TOKENPOOL_ENV"] == "production", name
        assert not any(key in env for key in HTTPS_ON), name
    env = _app_services(compose)["web"]["environment"]
    for key in ("TOKENPOOL_ENV", "SECURE_PROXY_SSL_HEADER"):
        monkeypatch.setenv(key, env[key])
    for key in HTTPS_ON:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.delenv("DEBUG", raising=False)
    monkeypatch.setenv("SECRET_KEY", secrets.token_urlsafe(50))
    settings = runpy.run_path(str(ROOT / "tokenpool" / "settings" / "base.py"))  # where these are read
    assert settings["PRODUCTION"] is True
    assert {key: settings[key] for key in HTTPS_ON} == HTTPS_ON
    assert settings["SECURE_PROXY_SSL_HEADER"] == ("HTTP_X_FORWARDED_PROTO", "https")
    monkeypatch.setenv("SECRET_KEY", "short-but-no-placeholder-word")
    # The production layer, loaded the way a process loads it (a fresh interpreter reads the environment).
    refused = subprocess.run([sys.executable, "-c", "import tokenpool.settings"], cwd=ROOT, capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode != 0 and "ImproperlyConfigured" in refused.stderr and "at least 50" in refused.stderr
