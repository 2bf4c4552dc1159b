"""Load the onboarding plan (onboarding/plan.json) so it exists right after ``migrate``.

Uses the same loader as ``manage.py load_onboarding_plan`` with this migration's historical model;
re-running the command later is a no-op unless plan.json changed."""
from django.db import migrations


def load_plan(apps, schema_editor):
    from onboarding.services import plan_load

    plan_load(task_model=apps.get_model("core", "OnboardingTask"))


class Migration(migrations.Migration):

    dependencies = [
        ("core", "0005_refill_lease"),
    ]

    operations = [
        # Reverse is a no-op: rolling the schema back drops the rows with the tables.
        migrations.RunPython(load_plan, migrations.RunPython.noop),
    ]
