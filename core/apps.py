from django.apps import AppConfig


class CoreConfig(AppConfig):
    """Holds only the historical migrations; the models live in their domain apps."""

    name = "core"
    verbose_name = "TokenPool (migration history)"
    default_auto_field = "django.db.models.BigAutoField"
