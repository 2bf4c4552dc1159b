from django.apps import AppConfig


class TomeConfig(AppConfig):
    name = "tome"
    verbose_name = "TOME"
    default_auto_field = "django.db.models.BigAutoField"
