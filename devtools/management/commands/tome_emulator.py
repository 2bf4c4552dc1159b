"""``manage.py tome_emulator --port 8900``: run the TOME emulator in the foreground."""
from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from devtools.tome_emulator.cli import add_arguments, run


class Command(BaseCommand):
    help = "Run the TOME emulator (docs/tome-api.md) until SIGTERM/SIGINT."
    requires_system_checks: list[str] = []  # a separate service: the web app's checks are not its business

    def add_arguments(self, parser: CommandParser) -> None:
        add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        # With no --database-url, cli.run falls back to TOME_EMULATOR_DATABASE_URL, then to a
        # 'tome_emulator' database on the app's server (DATABASE_URL) or the embedded PostgreSQL.
        run(options)
