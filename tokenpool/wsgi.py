"""WSGI entry point (gunicorn tokenpool.wsgi).

Two middleware stacks: the JSON API under ``/api/v1/`` runs ``settings.API_MIDDLEWARE``, everything
else (admin, dashboard, docs, probes) the full ``settings.MIDDLEWARE``. API clients authenticate
with API keys on every request, so sessions, CSRF, the admin's login lockout, messages, static files
and the HTML CSP do nothing for them but cost about 15 % of a reservation's Python work
(docs/benchmarks.md, "The HTTP path"). Tests that use Django's test client run the full stack;
tests over a real server (tests/edge, tests/runner, tests/client) run this one.
"""
import os

from django.core.handlers.wsgi import WSGIHandler
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tokenpool.settings")


class ApiWSGIHandler(WSGIHandler):
    """Django's handler with the API's middleware stack."""

    def load_middleware(self, is_async: bool = False) -> None:
        from django.conf import settings

        # BaseHandler.load_middleware reads settings.MIDDLEWARE and nothing else. It runs once, here,
        # while the module is imported and before the server sends a request to any thread.
        site_stack = settings.MIDDLEWARE
        settings.MIDDLEWARE = settings.API_MIDDLEWARE
        try:
            super().load_middleware(is_async)
        finally:
            settings.MIDDLEWARE = site_stack


class SplitApplication:
    """Sends ``/api/v1/`` to the API's handler and every other path to the site's."""

    def __init__(self) -> None:
        self.site = get_wsgi_application()  # django.setup() first
        self.api = ApiWSGIHandler()
        # The prefix ApiRequestGuardMiddleware guards: the short stack runs exactly where it does
        # (imported here, once the apps are loaded).
        from core.api.middleware import API_V1_PREFIX

        self.api_prefix = API_V1_PREFIX

    def __call__(self, environ, start_response):
        handler = self.api if environ.get("PATH_INFO", "").startswith(self.api_prefix) else self.site
        return handler(environ, start_response)


application = SplitApplication()
