from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "TokenPool"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Signal receivers live with their domains; importing them here wires them once.
        import importlib

        for module in ("core.refill.signals", "core.monitoring.signals"):
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as exc:
                if exc.name != module:
                    raise
