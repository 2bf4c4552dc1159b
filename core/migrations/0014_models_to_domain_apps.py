"""Hands every model to its domain app without touching a table (issue 18).

The tables keep their names (each model states ``db_table = "core_…"``); only Django's migration
state moves: the models leave app ``core`` here and each domain app's ``0001_initial`` adopts them,
state only. The content types are renamed in place, so permissions granted on them, admin log
entries and anything else that points at a content type keep pointing at the same rows."""
from django.db import migrations

MODELS_BY_APP = {'keys': ['apikey'], 'pool': ['pool', 'tokenpair', 'auditrecord'], 'refill': ['refillrun', 'refilllease'], 'onboarding': ['onboardingtask', 'approvaldecision', 'onboardingtransition', 'onboardingsummary'], 'monitoring': ['poolsnapshot', 'poolalert', 'poolconfigchange']}


def content_types_to_domain_apps(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    for app_label, model_names in MODELS_BY_APP.items():
        for model in model_names:
            if ContentType.objects.filter(app_label=app_label, model=model).exists():
                continue  # already there (a database that ran post_migrate of the new layout)
            ContentType.objects.filter(app_label="core", model=model).update(app_label=app_label)


def content_types_back_to_core(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    for app_label, model_names in MODELS_BY_APP.items():
        ContentType.objects.filter(app_label=app_label, model__in=model_names).update(app_label="core")


def schedules_to_domain_apps(apps, schema_editor):
    """django-q2 stores each schedule's task as a dotted path: ``core.refill.tasks.x`` is now
    ``refill.tasks.x``. The post-migrate sync would fix it too, but a qcluster that starts before
    it must not find a dead path."""
    Schedule = apps.get_model("django_q", "Schedule")
    for schedule in Schedule.objects.filter(func__startswith="core."):
        schedule.func = schedule.func.removeprefix("core.")
        schedule.save(update_fields=["func"])


def schedules_back_to_core(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    for prefix in ("pool.", "refill.", "monitoring."):
        for schedule in Schedule.objects.filter(func__startswith=prefix):
            schedule.func = "core." + schedule.func
            schedule.save(update_fields=["func"])


class Migration(migrations.Migration):

    dependencies = [
        ("core", "0013_pair_tokens_unique_without_like_indexes"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.RemoveField(
                    model_name='auditrecord',
                    name='api_key',
                ),
                migrations.RemoveField(
                    model_name='tokenpair',
                    name='reserved_by',
                ),
                migrations.RemoveField(
                    model_name='approvaldecision',
                    name='decided_by',
                ),
                migrations.RemoveField(
                    model_name='approvaldecision',
                    name='task',
                ),
                migrations.RemoveField(
                    model_name='auditrecord',
                    name='pair',
                ),
                migrations.RemoveField(
                    model_name='onboardingtask',
                    name='approved_by',
                ),
                migrations.RemoveField(
                    model_name='onboardingtask',
                    name='owner',
                ),
                migrations.RemoveField(
                    model_name='onboardingtask',
                    name='prerequisites',
                ),
                migrations.RemoveField(
                    model_name='onboardingtask',
                    name='submitted_by',
                ),
                migrations.RemoveField(
                    model_name='onboardingtransition',
                    name='task',
                ),
                migrations.RemoveField(
                    model_name='onboardingtransition',
                    name='by',
                ),
                migrations.RemoveField(
                    model_name='poolsnapshot',
                    name='pool',
                ),
                migrations.RemoveField(
                    model_name='poolalert',
                    name='pool',
                ),
                migrations.RemoveField(
                    model_name='tokenpair',
                    name='pool',
                ),
                migrations.RemoveField(
                    model_name='refillrun',
                    name='pool',
                ),
                migrations.RemoveField(
                    model_name='poolconfigchange',
                    name='pool',
                ),
                migrations.RemoveField(
                    model_name='refilllease',
                    name='pool',
                ),
                migrations.RemoveField(
                    model_name='poolalert',
                    name='acknowledged_by',
                ),
                migrations.RemoveField(
                    model_name='poolconfigchange',
                    name='changed_by',
                ),
                migrations.DeleteModel(
                    name='OnboardingSummary',
                ),
                migrations.DeleteModel(
                    name='ApiKey',
                ),
                migrations.DeleteModel(
                    name='ApprovalDecision',
                ),
                migrations.DeleteModel(
                    name='AuditRecord',
                ),
                migrations.DeleteModel(
                    name='OnboardingTask',
                ),
                migrations.DeleteModel(
                    name='OnboardingTransition',
                ),
                migrations.DeleteModel(
                    name='PoolSnapshot',
                ),
                migrations.DeleteModel(
                    name='TokenPair',
                ),
                migrations.DeleteModel(
                    name='RefillRun',
                ),
                migrations.DeleteModel(
                    name='Pool',
                ),
                migrations.DeleteModel(
                    name='RefillLease',
                ),
                migrations.DeleteModel(
                    name='PoolAlert',
                ),
                migrations.DeleteModel(
                    name='PoolConfigChange',
                ),
            ],
        ),
        migrations.RunPython(content_types_to_domain_apps, content_types_back_to_core),
        migrations.RunPython(schedules_to_domain_apps, schedules_back_to_core),
    ]
