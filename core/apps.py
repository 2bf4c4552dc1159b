from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "TokenPool"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Signal receivers live with their domains; importing them connects them once. Imported
        # here, not at module level: models must be loaded first.
        from core.monitoring import signals as _monitoring_signals  # noqa: F401
        from core.refill import signals as _refill_signals  # noqa: F401
