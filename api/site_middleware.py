"""Browser-only middleware that steps aside for the JSON API (``/api/v1/``).

Sessions, authentication, messages, static files and the HTML CSP serve the admin, the dashboard and
the docs. API clients send an API key with every request, so for
them this machinery does nothing but cost about 15 % of a reservation's Python work
(docs/benchmarks.md, "The HTTP path"). Each class here *is* the middleware it wraps (a subclass, so
Django's and the admin's system checks still find it in ``MIDDLEWARE``) and passes ``/api/v1/``
requests straight on, hooks included. The one decision, by path, lives here. CSRF and the admin's
login lockout stay listed by their own names (Django's security check looks for CSRF by name; DRF's
views are CSRF-exempt and axes only inspects the login's response, so both cost the API next to nothing).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth import logout
from django.contrib.auth.middleware import AuthenticationMiddleware as _Authentication
from django.contrib.messages.middleware import MessageMiddleware as _Message
from django.contrib.sessions.middleware import SessionMiddleware as _Session
from django.http import HttpRequest, HttpResponse
from whitenoise.middleware import WhiteNoiseMiddleware as _WhiteNoise

from api.middleware import API_V1_PREFIX
from api.middleware import HtmlCSPMiddleware as _HtmlCSP


def is_api_request(request: HttpRequest) -> bool:
    return request.path_info.startswith(API_V1_PREFIX)


def site_only(middleware: type) -> type:
    """``middleware`` for every path but ``/api/v1/``, where it neither runs nor adds a hook."""

    def __call__(self: Any, request: HttpRequest) -> HttpResponse:
        if is_api_request(request):
            return self.get_response(request)
        return middleware.__call__(self, request)

    attributes: dict[str, Any] = {"__call__": __call__, "__module__": __name__,
                                  "__doc__": f"{middleware.__module__}.{middleware.__qualname__}, not for /api/v1/."}
    for hook in ("process_view", "process_exception", "process_template_response"):
        if hasattr(middleware, hook):
            attributes[hook] = _hook_for_site_only(getattr(middleware, hook))
    return type(middleware.__name__, (middleware,), attributes)


def _hook_for_site_only(hook: Callable[..., Any]) -> Callable[..., Any]:
    def site_hook(self: Any, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        if is_api_request(request):
            return None
        return hook(self, request, *args, **kwargs)

    return site_hook


HtmlCSPMiddleware = site_only(_HtmlCSP)
WhiteNoiseMiddleware = site_only(_WhiteNoise)
SessionMiddleware = site_only(_Session)
AuthenticationMiddleware = site_only(_Authentication)
MessageMiddleware = site_only(_Message)


SESSION_STARTED_KEY = "_session_started_at"


class SessionLifetimeMiddleware:
    """The absolute limit of a signed-in session (``SESSION_ABSOLUTE_SECONDS``, 8 hours): the first
    request of a signed-in session stamps its start; a request after the limit logs the user out (the
    session is flushed server-side), so the admin asks for the password again however active the
    session was. The idle limit is Django's own (``SESSION_COOKIE_AGE`` with
    ``SESSION_SAVE_EVERY_REQUEST``). Browser pages only: ``/api/v1/`` has no sessions."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if is_api_request(request):
            return self.get_response(request)
        if _signed_in(request):
            started = request.session.get(SESSION_STARTED_KEY)
            if started is not None and time.time() - float(started) > settings.SESSION_ABSOLUTE_SECONDS:
                logout(request)
        response = self.get_response(request)
        # Stamped after the view too, so the login request itself starts the clock.
        if _signed_in(request) and SESSION_STARTED_KEY not in request.session:
            request.session[SESSION_STARTED_KEY] = time.time()
        return response


def _signed_in(request: HttpRequest) -> bool:
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_authenticated and hasattr(request, "session"))
