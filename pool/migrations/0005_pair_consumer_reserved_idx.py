"""The consumer adoption page's index (monitoring/adoption.py): built CONCURRENTLY, so a deployment
with millions of pairs keeps reserving while it is built (non-atomic migration)."""
from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ('pool', '0004_paircounter'),
    ]

    operations = [
        AddIndexConcurrently(
            model_name='tokenpair',
            index=models.Index(condition=models.Q(('reserved_by__isnull', False)), fields=['reserved_by', 'reserved_at'],
                               include=('status', 'source'), name='pair_consumer_reserved_idx'),
        ),
    ]
