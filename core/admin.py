"""The admin site: each room registers its own models in ``core/<room>/admin.py`` (imported here,
which Django's autodiscover loads). The Pool admin, which several rooms extend, is composed here
once from the mixins each room defines, so no room patches another's admin at import time."""
from django.contrib import admin

from core.api import admin as _api_admin  # noqa: F401 - registers its models
from core.monitoring import admin as _monitoring_admin  # noqa: F401
from core.monitoring.pool_config import PoolConfigAdminMixin
from core.onboarding import admin as _onboarding_admin  # noqa: F401
from core.pool.admin import PoolAdminBase
from core.pool.models import Pool
from core.refill.admin import RefillPoolAdminMixin


@admin.register(Pool)
class PoolAdmin(PoolConfigAdminMixin, RefillPoolAdminMixin, PoolAdminBase):
    """The pool's own admin, plus refill's "Refill now" and monitoring's validation and audit."""
