"""Load the onboarding plan; optionally approve one environment's common tasks as demo data."""
from __future__ import annotations

from pathlib import Path

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from common.errors import TokenPoolError
from onboarding.models import OnboardingGroup, OnboardingState, OnboardingTask
from onboarding.services import PLAN_PATH, plan_load, task_drive_to_approved
from pool.models import Environment

DEMO_SUBMITTER = "demo-lead"
DEMO_APPROVER = "demo-approver"
DEMO_NOTE = "Development demo data (load_onboarding_plan --approve-environment)."


class Command(BaseCommand):
    help = ("Create or update the onboarding tasks from onboarding/plan.json (idempotent). "
            "With --approve-environment, also approve that environment's common tasks through the "
            "normal four-eyes services, as demo users demo-lead (submits) and demo-approver (approves) "
            "— for development only.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--plan", default=str(PLAN_PATH), help="Path of the plan JSON file.")
        parser.add_argument(
            "--approve-environment", choices=[e.value for e in Environment],
            type=str.upper, help="Development demo: approve every common task of this environment.",
        )

    def handle(self, *args, **options) -> None:
        try:
            result = plan_load(path=Path(options["plan"]))
        except (OSError, ValueError, KeyError) as exc:
            raise CommandError(f"Cannot load the onboarding plan: {exc}") from exc
        self.stdout.write(
            f"Onboarding plan: {result.created} created, {result.updated} updated, "
            f"{result.unchanged} unchanged ({result.total} tasks)."
        )
        environment = options.get("approve_environment")
        if environment:
            approved, already = self._approve_environment(environment)
            self.stdout.write(
                f"Demo approvals for {environment}: {approved} approved now, {already} already approved."
            )

    def _demo_users(self):
        User = get_user_model()
        permission = Permission.objects.get(
            content_type__app_label="onboarding", codename="approve_onboardingtask",
        )
        with transaction.atomic():
            lead, _ = User.objects.get_or_create(username=DEMO_SUBMITTER, defaults={"is_active": True})
            approver, _ = User.objects.get_or_create(username=DEMO_APPROVER, defaults={"is_active": True})
            for user in (lead, approver):
                # Actors only: nobody can log in as them, so the demo adds no default credentials.
                if user.has_usable_password():
                    user.set_unusable_password()
                    user.save(update_fields=["password"])
            approver.user_permissions.add(permission)
        # Fresh instance: has_perm caches permissions per user object.
        return User.objects.get(pk=lead.pk), User.objects.get(pk=approver.pk)

    def _approve_environment(self, environment: str) -> tuple[int, int]:
        lead, approver = self._demo_users()
        tasks = OnboardingTask.objects.filter(group=OnboardingGroup.COMMON, environment=environment)
        pending = list(tasks.exclude(state=OnboardingState.APPROVED).order_by("position"))
        already = tasks.count() - len(pending)
        approved = 0
        # Prerequisites first: repeat passes until nothing moves (the chains are at most 2 deep).
        while pending:
            progressed, still = False, []
            for task in pending:
                try:
                    task_drive_to_approved(task=task, submitter=lead, approver=approver, note=DEMO_NOTE)
                except TokenPoolError as exc:
                    still.append((task, exc))
                    continue
                approved += 1
                progressed = True
            if not still:
                break
            if not progressed:
                reasons = "; ".join(f"{t.title}: {e.detail}" for t, e in still)
                raise CommandError(f"Cannot approve {environment} onboarding: {reasons}")
            pending = [t for t, _ in still]
        return approved, already
