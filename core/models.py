"""All of TokenPool's models live in their domain rooms; Django finds them here (app label "core")."""
from core.api.models import *  # noqa: F401,F403
from core.pool.models import *  # noqa: F401,F403
from core.refill.models import *  # noqa: F401,F403
from core.onboarding.models import *  # noqa: F401,F403
from core.monitoring.models import *  # noqa: F401,F403
