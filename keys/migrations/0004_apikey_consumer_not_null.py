"""Every API key belongs to a consumer: the column is NOT NULL once 0003 filled it."""
import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [("keys", "0003_consumer_per_existing_key")]

    operations = [
        migrations.AlterField(
            model_name="apikey",
            name="consumer",
            field=models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name="api_keys",
                                    to="keys.consumer"),
        ),
    ]
