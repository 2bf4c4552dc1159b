"""Issue 18: a database created by the single-app layout (every model in app ``core``, migrations
core 0001-0013) migrates to the domain-app layout with every row kept.

The test migrates the real PostgreSQL test database back to that layout (core at 0013, the domain
apps unapplied), fills every table of the 13 models through the HISTORICAL ``core`` models, plus a
content type with a granted permission, an admin log entry and a django-q2 schedule that name app
``core``, then migrates forward to the leaves and reads everything back through the CURRENT models.
A ``finally`` migrates forward whatever happens, so the database is left fully migrated."""
from __future__ import annotations

import datetime
import uuid
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

CORE_0013 = ("core", "0013_pair_tokens_unique_without_like_indexes")
NEW_APPS = ("keys", "pool", "refill", "onboarding", "monitoring")

# Model name -> (new app label, table). The tables never move: the models keep ``db_table = "core_…"``.
MODELS = {
    "ApiKey": ("keys", "core_apikey"),
    "Pool": ("pool", "core_pool"),
    "TokenPair": ("pool", "core_tokenpair"),
    "AuditRecord": ("pool", "core_auditrecord"),
    "RefillRun": ("refill", "core_refillrun"),
    "RefillLease": ("refill", "core_refilllease"),
    "OnboardingTask": ("onboarding", "core_onboardingtask"),
    "ApprovalDecision": ("onboarding", "core_approvaldecision"),
    "OnboardingTransition": ("onboarding", "core_onboardingtransition"),
    "PoolSnapshot": ("monitoring", "core_poolsnapshot"),
    "PoolAlert": ("monitoring", "core_poolalert"),
    "PoolConfigChange": ("monitoring", "core_poolconfigchange"),
}
M2M_TABLE = "core_onboardingtask_prerequisites"
TABLES = [table for _, table in MODELS.values()] + [M2M_TABLE]
# Content types of the 13 models (the proxy OnboardingSummary has one too).
CONTENT_TYPES = {name.lower(): app for name, (app, _) in MODELS.items()} | {"onboardingsummary": "onboarding"}

OLD_SCHEDULE_FUNC = "core.refill.tasks.refill_scheduled"
NEW_SCHEDULE_FUNC = "refill.tasks.refill_scheduled"
T0 = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.UTC)


def _executor() -> MigrationExecutor:
    return MigrationExecutor(connection)  # a fresh loader: it re-reads what is applied


def _migrate_to_single_app_layout() -> None:
    # Targets for the domain apps first: their 0001 depend on core 0014, so unapplying core 0014
    # unapplies them anyway; naming them checks each is really gone.
    executor = _executor()
    executor.migrate([(app, None) for app in NEW_APPS] + [CORE_0013])


def _migrate_to_latest() -> None:
    executor = _executor()
    executor.migrate(executor.loader.graph.leaf_nodes())


def _single_app_apps():
    """The historical app registry of the single-app layout: core at 0013, every other app (auth,
    contenttypes, admin, django_q, …) at its leaf, the domain apps absent."""
    loader = _executor().loader
    nodes = [node for node in loader.graph.leaf_nodes() if node[0] not in ("core", *NEW_APPS)]
    return loader.project_state([*nodes, CORE_0013]).apps


def _table_rows() -> dict[str, list[tuple]]:
    rows = {}
    with connection.cursor() as cursor:
        for table in TABLES:
            cursor.execute(f'SELECT * FROM "{table}" ORDER BY 1, 2')  # noqa: S608 - constant names
            rows[table] = cursor.fetchall()
    return rows


def _applied() -> set[tuple[str, str]]:
    return set(_executor().loader.applied_migrations)


def _fill_old_layout(apps) -> dict:  # noqa: PLR0915 - one row (or two) per table, in order
    """Rows in every table through the historical ``core`` models; returns the primary keys."""
    get = apps.get_model
    user_model = get("auth", "User")
    submitter = user_model.objects.create(username="mig-submitter", password="!", is_active=True)
    approver = user_model.objects.create(username="mig-approver", password="!", is_active=True)

    api_key = get("core", "ApiKey").objects.create(
        id="Mig18key.hashvalue", prefix="Mig18key", hashed_key="pbkdf2$hash", name="migration key",
        scopes=["reserve", "lookup"], rate_limit_per_second=7,
    )
    pool = get("core", "Pool").objects.create(
        name="mig-pool", environment="PRODUCTION", target_size=400, low_watermark=100, critical_watermark=20,
        batch_size=50, refill_interval_minutes=9, reservation_ttl=datetime.timedelta(minutes=5),
    )
    pair_model = get("core", "TokenPair")
    available = pair_model.objects.create(pool=pool, internal_token="mig-int-1", external_ref_id="mig-ext-1")
    reservation = uuid.uuid4()
    reserved = pair_model.objects.create(
        pool=pool, internal_token="mig-int-2", external_ref_id="mig-ext-2", status="RESERVED", source="pool",
        reservation_id=reservation, owner_ref="owner-7", idempotency_key="idem-1", idempotency_index=0,
        request_fingerprint="f" * 64, reserved_at=T0, expires_at=T0 + datetime.timedelta(minutes=5),
        reserved_by=api_key,
    )
    audit = get("core", "AuditRecord").objects.create(
        api_key=api_key, pair=reserved, action="lookup", token_digest="d" * 64, correlation_id="corr-18",
        outcome="found",
    )
    run = get("core", "RefillRun").objects.create(
        pool=pool, trigger="manual", outcome="partial", finished_at=T0, requested=50, inserted=30,
        tome_calls=2, error="one batch failed", correlation_id="run-18",
    )
    lease_token = uuid.uuid4()
    get("core", "RefillLease").objects.create(
        pool=pool, token=lease_token, state="cooldown", acquired_at=T0, expires_at=T0 + datetime.timedelta(minutes=1),
        task_id="task-18",
    )
    task_model = get("core", "OnboardingTask")
    approved = task_model.objects.create(
        slug="mig-18-approved", title="Approved common task", environment="UAT", group="common", position=901,
        estimate_days=Decimal("2.5"), state="APPROVED", submitted_by=submitter, submitted_at=T0,
        approved_by=approver, approved_at=T0 + datetime.timedelta(hours=1), owner=submitter,
    )
    dependent = task_model.objects.create(
        slug="mig-18-dependent", title="Library task", environment=None, group="library", position=902,
        optional=True,
    )
    dependent.prerequisites.add(approved)
    decision = get("core", "ApprovalDecision").objects.create(
        task=approved, decided_by=approver, decision="approve", note="looks right", decided_at=T0,
    )
    transition = get("core", "OnboardingTransition").objects.create(
        task=approved, by=submitter, from_state="IN_PROGRESS", to_state="AWAITING_APPROVAL", at=T0, note="submitted",
    )
    snapshot = get("core", "PoolSnapshot").objects.create(
        pool=pool, taken_at=T0, available=1, reserved=1, used=0, retired=0, reserved_total=5, reserved_direct=2,
        tome_calls_total=3, anchor_id=11, rows_pool=2, rows_direct=0,
    )
    alert = get("core", "PoolAlert").objects.create(
        pool=pool, condition="pool_low", severity="warning", opened_at=T0, details={"available": 1},
        acknowledged_by=approver, acknowledged_at=T0,
    )
    change = get("core", "PoolConfigChange").objects.create(
        pool=pool, field="target_size", old="300", new="400", changed_by=approver,
    )

    # A content type of the old layout, a permission on it granted to a user, an admin log entry.
    content_type_model = get("contenttypes", "ContentType")
    task_type, _ = content_type_model.objects.get_or_create(app_label="core", model="onboardingtask")
    permission, _ = get("auth", "Permission").objects.get_or_create(
        content_type=task_type, codename="approve_onboardingtask",
        defaults={"name": "Can approve or reject onboarding tasks"},
    )
    approver.user_permissions.add(permission)
    log_entry = get("admin", "LogEntry").objects.create(
        user=approver, content_type=task_type, object_id=str(approved.pk), object_repr="Approved common task",
        action_flag=2, change_message="[]", action_time=T0,
    )
    schedule = get("django_q", "Schedule").objects.create(
        name="mig-18:refill", func=OLD_SCHEDULE_FUNC, kwargs=repr({"pool_id": pool.pk}), schedule_type="I",
        minutes=9, repeats=-1,
    )
    return {
        "api_key": api_key.pk, "pool": pool.pk, "available": available.pk, "reserved": reserved.pk,
        "reservation": reservation, "audit": audit.pk, "run": run.pk, "lease_token": lease_token,
        "approved": approved.pk, "dependent": dependent.pk, "decision": decision.pk, "transition": transition.pk,
        "snapshot": snapshot.pk, "alert": alert.pk, "change": change.pk, "submitter": submitter.pk,
        "approver": approver.pk, "task_type": task_type.pk, "permission": permission.pk, "log_entry": log_entry.pk,
        "schedule": schedule.pk,
        "content_types": dict(
            content_type_model.objects.filter(app_label="core", model__in=CONTENT_TYPES).values_list("model", "pk")
        ),
    }


def _assert_current_models_read_everything(pks: dict) -> None:  # noqa: PLR0915 - one block per model
    from django.contrib.admin.models import LogEntry
    from django.contrib.auth import get_user_model
    from django.contrib.contenttypes.models import ContentType
    from django_q.models import Schedule

    from keys.models import ApiKey
    from monitoring.models import PoolAlert, PoolConfigChange, PoolSnapshot
    from onboarding.models import ApprovalDecision, OnboardingTask, OnboardingTransition
    from pool.models import AuditRecord, Pool, TokenPair
    from refill.models import RefillLease, RefillRun

    key = ApiKey.objects.get(pk=pks["api_key"])
    assert (key.prefix, key.name, key.scopes, key.rate_limit_per_second) == (
        "Mig18key", "migration key", ["reserve", "lookup"], 7)

    pool = Pool.objects.get(pk=pks["pool"])
    assert (pool.name, pool.environment, pool.target_size, pool.reservation_ttl) == (
        "mig-pool", "PRODUCTION", 400, datetime.timedelta(minutes=5))

    reserved = TokenPair.objects.get(pk=pks["reserved"])
    assert (reserved.pool_id, reserved.reserved_by_id, reserved.status, reserved.reservation_id) == (
        pool.pk, key.pk, "RESERVED", pks["reservation"])
    assert reserved.expires_at == T0 + datetime.timedelta(minutes=5)
    assert TokenPair.objects.get(pk=pks["available"]).internal_token == "mig-int-1"
    assert set(pool.pairs.values_list("pk", flat=True)) == {pks["available"], pks["reserved"]}

    audit = AuditRecord.objects.get(pk=pks["audit"])
    assert (audit.api_key_id, audit.pair_id, audit.outcome, audit.correlation_id) == (
        key.pk, reserved.pk, "found", "corr-18")

    run = RefillRun.objects.get(pk=pks["run"])
    assert (run.pool_id, run.outcome, run.requested, run.inserted, run.error) == (
        pool.pk, "partial", 50, 30, "one batch failed")
    lease = RefillLease.objects.get(pk=pool.pk)
    assert (lease.token, lease.state, lease.task_id) == (pks["lease_token"], "cooldown", "task-18")

    approved = OnboardingTask.objects.get(pk=pks["approved"])
    assert (approved.slug, approved.state, approved.estimate_days) == ("mig-18-approved", "APPROVED", Decimal("2.5"))
    assert (approved.submitted_by_id, approved.approved_by_id) == (pks["submitter"], pks["approver"])
    dependent = OnboardingTask.objects.get(pk=pks["dependent"])
    assert list(dependent.prerequisites.values_list("pk", flat=True)) == [approved.pk]
    assert (dependent.environment, dependent.optional) == (None, True)
    decision = ApprovalDecision.objects.get(pk=pks["decision"])
    assert (decision.task_id, decision.decided_by_id, decision.decision, decision.note) == (
        approved.pk, pks["approver"], "approve", "looks right")
    transition = OnboardingTransition.objects.get(pk=pks["transition"])
    assert (transition.task_id, transition.to_state, transition.at) == (approved.pk, "AWAITING_APPROVAL", T0)

    snapshot = PoolSnapshot.objects.get(pk=pks["snapshot"])
    assert (snapshot.pool_id, snapshot.reserved_total, snapshot.reserved_direct, snapshot.anchor_id) == (
        pool.pk, 5, 2, 11)
    alert = PoolAlert.objects.get(pk=pks["alert"])
    assert (alert.pool_id, alert.condition, alert.details, alert.acknowledged_by_id) == (
        pool.pk, "pool_low", {"available": 1}, pks["approver"])
    change = PoolConfigChange.objects.get(pk=pks["change"])
    assert (change.pool_id, change.field, change.old, change.new) == (pool.pk, "target_size", "300", "400")

    # Content types renamed in place: same ids, new app labels; the permission and log entry follow.
    ContentType.objects.clear_cache()
    assert not ContentType.objects.filter(app_label="core").exists()
    renamed = {ct.model: (ct.app_label, ct.pk) for ct in ContentType.objects.filter(model__in=CONTENT_TYPES)}
    assert renamed == {model: (CONTENT_TYPES[model], pk) for model, pk in pks["content_types"].items()}
    task_type = ContentType.objects.get_for_model(OnboardingTask)
    assert (task_type.pk, task_type.app_label) == (pks["task_type"], "onboarding")

    user = get_user_model().objects.get(pk=pks["approver"])  # a fresh instance: no permission cache
    for cache in ("_perm_cache", "_user_perm_cache", "_group_perm_cache"):
        user.__dict__.pop(cache, None)
    assert user.has_perm("onboarding.approve_onboardingtask")
    assert not user.has_perm("core.approve_onboardingtask")
    assert LogEntry.objects.get(pk=pks["log_entry"]).content_type_id == pks["task_type"]

    schedule = Schedule.objects.get(pk=pks["schedule"])
    assert schedule.func == NEW_SCHEDULE_FUNC
    assert not Schedule.objects.filter(func__startswith="core.").exists()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_single_app_database_migrates_to_the_domain_apps_with_every_row_kept():
    try:
        _migrate_to_single_app_layout()
        applied = _applied()
        assert CORE_0013 in applied
        assert ("core", "0014_models_to_domain_apps") not in applied
        assert not {node for node in applied if node[0] in NEW_APPS}

        pks = _fill_old_layout(_single_app_apps())
        before = _table_rows()
        assert all(before.values()), {table: len(rows) for table, rows in before.items() if not rows}

        _migrate_to_latest()
        assert _executor().migration_plan(_executor().loader.graph.leaf_nodes()) == []

        after = _table_rows()
        assert {t: len(r) for t, r in after.items()} == {t: len(r) for t, r in before.items()}
        # Every row, every column, same primary keys; later migrations only append columns
        # (keys 0002: the consumer and rotation columns, pool 0003: the audit's consumer).
        assert {t: [row[:len(before[t][0])] for row in rows] for t, rows in after.items()} == before
        from keys.models import ApiKey

        assert all(key.consumer.name == key.name for key in ApiKey.objects.select_related("consumer"))
        _assert_current_models_read_everything(pks)
    finally:
        _migrate_to_latest()
        from django.contrib.contenttypes.models import ContentType

        ContentType.objects.clear_cache()


@pytest.mark.django_db
def test_the_models_and_the_migrations_agree():
    try:
        call_command("makemigrations", check=True, dry_run=True, verbosity=1)
    except SystemExit as exit_:  # makemigrations --check exits 1 when a migration is missing
        pytest.fail(f"makemigrations --check found model changes without a migration (exit {exit_.code})")
