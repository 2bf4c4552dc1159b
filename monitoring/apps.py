from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "monitoring"
    verbose_name = "Monitoring"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Receivers connect when their module is imported; models must be loaded first.
        from monitoring import signals  # noqa: F401, PLC0415 - the documented place to connect receivers

