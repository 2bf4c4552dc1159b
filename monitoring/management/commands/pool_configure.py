"""``manage.py pool_configure NAME [--create] [--environment UAT|PRODUCTION] [--target-size N] ...``

Creates (with ``--create``) or changes a pool with exactly the admin's validation and audit: the
values go through the admin's ``PoolConfigForm`` (every check constraint as a readable message, plus
the model's own field validation) and the change is recorded by ``pool_config_changes_record`` in
the same transaction as the save (``changed_by`` empty: a command has no admin user). Contract
section 1: the pool's settings are printed as one JSON object on the last line of stdout; invalid
values exit with status 2, say why on stderr and change nothing.

``--create`` on a pool that already exists changes it (scripts can run it again safely); without
``--create`` an unknown pool is an error.
"""
from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import IntegrityError, transaction
from django.forms.models import model_to_dict

from monitoring.pool_config import PoolConfigForm
from monitoring.services import AUDITED_POOL_FIELDS, pool_config_changes_record
from pool.models import Environment, Pool

# option dest -> (model field, command-line flag)
_OPTIONS: dict[str, tuple[str, str]] = {
    "environment": ("environment", "--environment"),
    "target_size": ("target_size", "--target-size"),
    "low_watermark": ("low_watermark", "--low-watermark"),
    "critical_watermark": ("critical_watermark", "--critical-watermark"),
    "batch_size": ("batch_size", "--batch-size"),
    "refill_interval_minutes": ("refill_interval_minutes", "--refill-interval-minutes"),
    "reservation_ttl_seconds": ("reservation_ttl", "--reservation-ttl-seconds"),
    "refill": ("refill_enabled", "--refill/--no-refill"),
}
_FLAG_OF_FIELD = {field: flag for field, flag in _OPTIONS.values()} | {"name": "NAME"}

INVALID = 2  # the contract's exit status for invalid values


def pool_settings(pool: Pool) -> dict[str, Any]:
    """The pool's settings as printed on the last line (also what the tests read back)."""
    return {
        "name": pool.name,
        "environment": pool.environment,
        "ns1_namespace": pool.ns1_namespace,
        "ns2_namespace": pool.ns2_namespace,
        "target_size": pool.target_size,
        "low_watermark": pool.low_watermark,
        "critical_watermark": pool.critical_watermark,
        "batch_size": pool.batch_size,
        "refill_interval_minutes": pool.refill_interval_minutes,
        "reservation_ttl_seconds": int(pool.reservation_ttl.total_seconds()),
        "refill_enabled": pool.refill_enabled,
    }


class Command(BaseCommand):
    help = "Create (--create) or change a pool with the admin's validation and audit; prints its settings as JSON."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="Pool name (a slug, at most 64 characters).")
        parser.add_argument("--create", action="store_true", help="Create the pool if it does not exist.")
        parser.add_argument("--environment", choices=Environment.values)
        parser.add_argument("--target-size", type=int, metavar="N")
        parser.add_argument("--low-watermark", type=int, metavar="N")
        parser.add_argument("--critical-watermark", type=int, metavar="N")
        parser.add_argument("--batch-size", type=int, metavar="N")
        parser.add_argument("--refill-interval-minutes", type=int, metavar="N")
        parser.add_argument("--reservation-ttl-seconds", type=int, metavar="N")
        refill = parser.add_mutually_exclusive_group()
        refill.add_argument("--refill", dest="refill", action="store_true", default=None,
                            help="Enable scheduled and low-watermark refills.")
        refill.add_argument("--no-refill", dest="refill", action="store_false", help="Disable them.")

    def handle(self, *args: Any, **options: Any) -> None:
        name: str = options["name"]
        changes: dict[str, Any] = {}
        for dest, (field, _flag) in _OPTIONS.items():
            value = options.get(dest)
            if value is None:
                continue
            changes[field] = timedelta(seconds=value) if field == "reservation_ttl" else value

        try:
            with transaction.atomic():
                pool, created, changed = self._apply(name=name, create=options["create"], changes=changes)
        except IntegrityError as exc:  # a concurrent edit made the combination invalid after our check
            raise CommandError(f"invalid pool settings (refused by the database): {exc}", returncode=INVALID) from exc

        if created:
            self.stdout.write(f"created pool {pool.name}")
        for field, (old, new) in changed.items():
            self.stdout.write(f"{field}: {old} -> {new}")
        if not created and not changed:
            self.stdout.write(f"pool {pool.name}: nothing to change")
        self.stdout.write(json.dumps(pool_settings(pool), sort_keys=True))

    def _apply(self, *, name: str, create: bool,
               changes: dict[str, Any]) -> tuple[Pool, bool, dict[str, tuple[Any, Any]]]:
        # The row is locked so two concurrent runs cannot both validate against the old values.
        pool = Pool.objects.select_for_update().filter(name=name).first()
        created = pool is None
        if created and not create:
            raise CommandError(f"NAME: unknown pool {name!r} (use --create to create it)", returncode=INVALID)
        instance = pool if pool is not None else Pool(name=name)
        # Before the form: validating it already writes the new values into the instance.
        old = {} if created else {f: getattr(instance, f) for f in AUDITED_POOL_FIELDS}
        data = model_to_dict(instance)
        data.update(changes)
        data["name"] = name
        form = PoolConfigForm(data=data, instance=instance)
        if not form.is_valid():
            raise CommandError(self._describe(form), returncode=INVALID)
        saved = form.save()
        new = {f: getattr(saved, f) for f in AUDITED_POOL_FIELDS}
        # The admin's audit, in the same transaction as the save (changed_by: no admin user here).
        pool_config_changes_record(pool=saved, user=None, old=old, new=new)
        changed = {} if created else {f: (old[f], new[f]) for f in AUDITED_POOL_FIELDS if old[f] != new[f]}
        return saved, created, changed

    @staticmethod
    def _describe(form: PoolConfigForm) -> str:
        lines = ["invalid pool settings, nothing changed:"]
        for field, errors in form.errors.items():
            label = _FLAG_OF_FIELD.get(field, field) if field != "__all__" else "settings"
            lines.extend(f"  {label}: {message}" for message in errors)
        return "\n".join(lines)
