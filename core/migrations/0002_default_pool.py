"""Create the pool ``default`` (UAT) that the contract promises exists after migrate."""
from django.db import migrations


def create_default_pool(apps, schema_editor):
    Pool = apps.get_model("core", "Pool")
    Pool.objects.get_or_create(name="default", defaults={"environment": "UAT"})


class Migration(migrations.Migration):
    dependencies = [("core", "0001_initial")]
    operations = [migrations.RunPython(create_default_pool, migrations.RunPython.noop)]
