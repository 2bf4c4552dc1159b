"""Create (or reset the password of) a development superuser. Used by `make run`."""
from __future__ import annotations

import os

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Ensure a staff superuser exists with the given password (development convenience)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--username", default="admin")
        parser.add_argument("--password", default=None,
                            help="Defaults to $TOKENPOOL_ADMIN_PASSWORD (preferred: argv is visible in ps).")
        parser.add_argument("--email", default="admin@localhost")

    def handle(self, *args, username: str, password: str | None, email: str, **options) -> None:
        password = password or os.environ.get("TOKENPOOL_ADMIN_PASSWORD")
        if not password:
            raise CommandError("Give --password or set TOKENPOOL_ADMIN_PASSWORD.")
        user, created = get_user_model().objects.get_or_create(
            username=username, defaults={"email": email, "is_staff": True, "is_superuser": True}
        )
        if created or not user.check_password(password):
            user.set_password(password)
            user.is_staff = user.is_superuser = True
            user.save()
        self.stdout.write(f"admin user '{username}' {'created' if created else 'ready'}")
