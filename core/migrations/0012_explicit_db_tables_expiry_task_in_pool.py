"""Every model names its table (today's names, so no SQL runs: a later split into one Django app per
domain then costs no data migration), and the lease-expiry Schedule points at the task's new home
in the pool room."""
from django.db import migrations

OLD_EXPIRY_FUNC = "core.refill.tasks.reservations_expire_task"
NEW_EXPIRY_FUNC = "core.pool.tasks.reservations_expire_task"


def _expiry_func(old: str, new: str):  # noqa: ANN202
    def move(apps, schema_editor) -> None:  # noqa: ANN001
        Schedule = apps.get_model("django_q", "Schedule")
        Schedule.objects.filter(func=old).update(func=new)
    return move


class Migration(migrations.Migration):

    dependencies = [
        ("core", "0011_shared_limits_and_key_generation"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [
        *[migrations.AlterModelTable(name=name, table=f"core_{name}") for name in (
            "apikey", "approvaldecision", "auditrecord", "onboardingtask", "onboardingtransition", "pool",
            "poolalert", "poolconfigchange", "poolsnapshot", "refilllease", "refillrun", "tokenpair",
        )],
        migrations.RunPython(_expiry_func(OLD_EXPIRY_FUNC, NEW_EXPIRY_FUNC),
                             _expiry_func(NEW_EXPIRY_FUNC, OLD_EXPIRY_FUNC)),
    ]
