"""Admin registrations live with their domains (core/<room>/admin.py); Django's autodiscover finds
this module and each room's admin is imported here once."""
import importlib

for _room in ("pool", "refill", "onboarding", "monitoring", "api"):
    _module = f"core.{_room}.admin"
    try:
        importlib.import_module(_module)
    except ModuleNotFoundError as exc:
        if exc.name != _module:
            raise
