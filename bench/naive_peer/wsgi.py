"""WSGI entry point of the naive peer (``gunicorn bench.naive_peer.wsgi:application``)."""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.naive_peer.settings")
application = get_wsgi_application()
