"""``manage.py make_run_bootstrap``: `make run`'s setup steps in one Django start (devtools/runner.py
runs it as a child): migrate, static files, the admin user, onboarding demo data, the development API
key. Exit status 0 when pool `default` is at its target, BOOTSTRAP_NEEDS_FILL when it needs a fill."""
from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from devtools.runner import BOOTSTRAP_NEEDS_FILL, DEV_KEY_NAME, DEV_KEY_SCOPES
from keys.services import api_keys_revoke
from pool.models import Pool
from pool.selectors import pool_available_up_to

LEGACY_DEV_KEY = r"^dev-[0-9]+$"  # `dev-<unix time>`: one per `make run` before keys were kept in var/


def revoke_legacy_dev_keys() -> int:
    """Revoke the all-scope `dev-<unix time>` keys every earlier `make run` created and kept active."""
    return api_keys_revoke(name_regex=LEGACY_DEV_KEY)


def bootstrap() -> int:
    """The setup steps; returns the exit status (0 or BOOTSTRAP_NEEDS_FILL)."""
    var = settings.VAR_DIR
    var.mkdir(parents=True, exist_ok=True)
    call_command("migrate", interactive=False, verbosity=0)
    call_command("collectstatic", interactive=False, verbosity=0)  # served by whitenoise
    call_command("ensure_admin", "--username", "admin", "--password-file", str(var / "admin-password.txt"))
    # Development demo data: UAT onboarding approved (by two demo users, four-eyes) so the readiness
    # gate lets the UAT pool refill.
    call_command("load_onboarding_plan", "--approve-environment", "UAT")
    revoked = revoke_legacy_dev_keys()
    if revoked:
        print(f"Revoked {revoked} development key(s) left by earlier `make run`s.", flush=True)
    call_command("create_api_key", DEV_KEY_NAME, "--scopes", DEV_KEY_SCOPES,
                 "--key-file", str(var / "dev-api-key.txt"))
    pool = Pool.objects.filter(name="default").first()
    if pool is not None and pool_available_up_to(pool=pool, limit=pool.target_size) >= pool.target_size:
        return 0
    return BOOTSTRAP_NEEDS_FILL


class Command(BaseCommand):
    help = "`make run`'s setup steps (exit status 3: pool 'default' is below its target)."
    requires_system_checks: list[str] = []  # as before as a plain script: `manage.py check` is not its step

    def handle(self, *args: Any, **options: Any) -> None:
        status = bootstrap()
        if status:
            raise SystemExit(status)
