"""Drop the two varchar_pattern_ops "_like" indexes Django added for the unique token columns.

A status change is never a HOT update, so every reservation writes an entry into every index of
core_tokenpair; nothing runs LIKE on the tokens (lookup, detokenize and the admin search are exact).
The uniqueness itself is unchanged: the model now declares it as two UniqueConstraints named like
the existing column constraints, so the database side only drops the "_like" indexes (no unique
index is rebuilt on a large table)."""
from django.db import migrations, models

_LIKE_INDEXES = {
    "internal_token": "core_tokenpair_internal_token_6b202fb0_like",
    "external_ref_id": "core_tokenpair_external_ref_id_fada2e39_like",
}


class Migration(migrations.Migration):

    dependencies = [
        ("core", "0012_explicit_db_tables_expiry_task_in_pool"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(model_name="tokenpair", name="external_ref_id",
                                      field=models.CharField(max_length=128)),
                migrations.AlterField(model_name="tokenpair", name="internal_token",
                                      field=models.CharField(max_length=128)),
                migrations.AddConstraint(
                    model_name="tokenpair",
                    constraint=models.UniqueConstraint(fields=("internal_token",),
                                                       name="core_tokenpair_internal_token_key"),
                ),
                migrations.AddConstraint(
                    model_name="tokenpair",
                    constraint=models.UniqueConstraint(fields=("external_ref_id",),
                                                       name="core_tokenpair_external_ref_id_key"),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    sql=f'DROP INDEX IF EXISTS "{name}"',
                    reverse_sql=f'CREATE INDEX IF NOT EXISTS "{name}" ON core_tokenpair ({column} varchar_pattern_ops)',
                )
                for column, name in _LIKE_INDEXES.items()
            ],
        ),
    ]
