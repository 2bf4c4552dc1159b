"""TokenPool's settings (``DJANGO_SETTINGS_MODULE=tokenpool.settings``): ``TOKENPOOL_ENV`` picks the
layer, ``development`` (default) or ``production``; both extend ``base``. pytest uses ``.test``.

Every environment variable is read in this package and nowhere else; code reads ``settings.X``."""
from tokenpool.settings.base import TOKENPOOL_ENV

if TOKENPOOL_ENV == "production":
    from tokenpool.settings.production import *  # noqa: F403
else:
    from tokenpool.settings.development import *  # noqa: F403
