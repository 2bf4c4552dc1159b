"""Create (or reset the password of) a development superuser. Used by `make run`.

``--password-file PATH`` (what `make run` uses): the password is read from PATH, or generated and
written there (mode 0600) when the file is missing, so it is never on a command line, in the
environment or on the console.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Ensure a staff superuser exists with the given password (development convenience)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--username", default="admin")
        parser.add_argument("--password", default=None,
                            help="Defaults to $TOKENPOOL_ADMIN_PASSWORD (preferred: argv is visible in ps).")
        parser.add_argument("--password-file", default=None,
                            help="Read the password from this file; create it (mode 0600) with a random one "
                                 "if missing.")
        parser.add_argument("--email", default="admin@localhost")

    def handle(self, *args, username: str, password: str | None, email: str, password_file: str | None = None,
               **options) -> None:
        if password_file:
            password = _password_from_file(Path(password_file))
        password = password or settings.TOKENPOOL_ADMIN_PASSWORD
        if not password:
            raise CommandError("Give --password-file, --password or set TOKENPOOL_ADMIN_PASSWORD.")
        user, created = get_user_model().objects.get_or_create(
            username=username, defaults={"email": email, "is_staff": True, "is_superuser": True}
        )
        if created or not user.check_password(password):
            user.set_password(password)
            user.is_staff = user.is_superuser = True
            user.save()
        where = f" (password in {password_file})" if password_file else ""
        self.stdout.write(f"admin user '{username}' {'created' if created else 'ready'}{where}")


def _password_from_file(path: Path) -> str:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL + 0600 at creation: the password is never readable by others, not even briefly.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # a concurrent run created it first: use theirs
            pass
        else:
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(16) + "\n")
    password = path.read_text().strip()
    if not password:
        raise CommandError(f"{path} is empty; delete it to have a new password generated")
    return password
