"""WSGI entry point (``gunicorn tokenpool.wsgi``): Django's own handler. The JSON API's shorter path
through the middleware is api/site_middleware.py's, not a second handler."""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tokenpool.settings")
application = get_wsgi_application()
