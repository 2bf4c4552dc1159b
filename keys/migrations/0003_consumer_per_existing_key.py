"""Every existing API key gets a consumer named after the key (contract section 1's default), so
need-to-know keeps each key's own pairs visible to it and nothing more."""
from django.db import migrations


def consumers_for_existing_keys(apps, schema_editor) -> None:  # noqa: ANN001 - migration signature
    api_key_model = apps.get_model("keys", "ApiKey")
    consumer_model = apps.get_model("keys", "Consumer")
    for key in api_key_model.objects.filter(consumer__isnull=True).order_by("created"):
        key.consumer = consumer_model.objects.get_or_create(name=key.name)[0]
        key.save(update_fields=["consumer"])


class Migration(migrations.Migration):

    dependencies = [("keys", "0002_consumers")]

    operations = [migrations.RunPython(consumers_for_existing_keys, migrations.RunPython.noop)]
