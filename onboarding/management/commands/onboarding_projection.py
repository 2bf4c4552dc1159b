"""Print the go-live projection (contract section 4): a table, then one JSON object on the last line."""
from __future__ import annotations

import json
from datetime import date

from django.core.management.base import BaseCommand, CommandError

from onboarding.projection import go_live_projection


class Command(BaseCommand):
    help = ("Project when UAT and Production are ready (likely and late) from the onboarding tasks' estimates, "
            "prerequisites, states and approval lead times. The last line of stdout is one JSON object: "
            '{"UAT": {"likely", "late", "critical_path"}, "PRODUCTION": {...}}.')

    def add_arguments(self, parser) -> None:
        parser.add_argument("--start", help="Project from this date (YYYY-MM-DD; default today).")

    def handle(self, *args, **options) -> None:
        try:
            start = date.fromisoformat(options["start"]) if options["start"] else None
        except ValueError as exc:
            raise CommandError(f"--start must be YYYY-MM-DD: {exc}") from exc
        projection = go_live_projection(start=start)
        for env, ep in projection.environments.items():
            self.stdout.write(f"{env}: likely {ep.likely}, late {ep.late} "
                              f"(approval lead time {ep.lead.likely:g}-{ep.lead.late:g} working days, {ep.lead.basis})")
            self.stdout.write("  critical path: " + " → ".join(
                f"{tp.task.title} ({tp.likely_end})" for tp in ep.critical_path))
        for tp in projection.late_tasks():
            self.stdout.write(f"  late: {tp.task.title}: {tp.late_reason}")
        self.stdout.write(json.dumps(projection.as_json()))
