"""Alert notifications: e-mail (Django mail settings) and a Slack-compatible JSON webhook.

Both are best effort and never raise into the caller: an alert must be recorded even when the
mail server or the chat service is down. Neither is ever sent from inside a transaction.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.core.mail import send_mail
from django.utils import timezone
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from monitoring.models import PoolAlert

logger = logging.getLogger("tokenpool.alerts")

WEBHOOK_TIMEOUT = httpx.Timeout(5.0, connect=2.0)


class _RetryableWebhookError(Exception):
    pass


@dataclass(frozen=True)
class NotifyResult:
    email: bool | None  # None: no recipients configured
    webhook: bool | None  # None: no URL configured


def alert_text(*, alert: PoolAlert, event: str) -> str:
    """One human line per event, e.g. ``[TokenPool] OPENED critical: default — ...``."""
    pool = alert.pool.name
    headline = f"[TokenPool] {event.upper()} {alert.severity}: pool '{pool}' — {alert.get_condition_display()}"
    details = ", ".join(f"{k}={v}" for k, v in sorted(alert.details.items()) if not isinstance(v, (dict, list)))
    return f"{headline}" + (f" ({details})" if details else "")


def email_send(*, subject: str, body: str) -> bool | None:
    recipients = list(settings.ALERT_EMAILS)
    if not recipients:
        return None
    try:
        send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, recipients, fail_silently=False)
    except Exception:
        logger.exception("alert_email_failed", extra={"recipients": len(recipients)})
        return False
    return True


def webhook_post(*, url: str, payload: dict[str, object], attempts: int | None = None,
                 backoff_initial: float | None = None) -> bool:
    """POST ``payload`` as JSON; retries timeouts, connection errors, 429 and 5xx with backoff.

    Returns whether it was delivered. The URL is never logged (chat webhook URLs are secrets)."""
    attempts = attempts or settings.ALERT_WEBHOOK_ATTEMPTS
    backoff_initial = settings.ALERT_WEBHOOK_BACKOFF_SECONDS if backoff_initial is None else backoff_initial
    host = urlsplit(url).hostname or "?"
    try:
        with httpx.Client(timeout=WEBHOOK_TIMEOUT) as client:
            for attempt in Retrying(
                stop=stop_after_attempt(attempts),
                wait=wait_exponential(multiplier=backoff_initial, max=30),
                retry=retry_if_exception_type((_RetryableWebhookError, httpx.TransportError)),
                reraise=True,
            ):
                with attempt:
                    response = client.post(url, json=payload)
                    if response.status_code == 429 or response.status_code >= 500:
                        raise _RetryableWebhookError(f"HTTP {response.status_code}")
                    if response.status_code >= 400:
                        logger.error("alert_webhook_rejected",
                                     extra={"webhook_host": host, "status": response.status_code})
                        return False
        return True
    except Exception as exc:
        logger.error("alert_webhook_failed", extra={"webhook_host": host, "attempts": attempts,
                                                    "error": type(exc).__name__})
        return False


def alert_notify(*, alert: PoolAlert, event: str) -> NotifyResult:
    """Tell the humans an alert opened or resolved; records ``last_notified_at`` if anything went out."""
    text = alert_text(alert=alert, event=event)
    email = email_send(subject=text[:200], body=text + "\n\nDashboard: /admin/dashboard/\n")
    webhook = (webhook_post(url=settings.ALERT_WEBHOOK_URL, payload={"text": text})
               if settings.ALERT_WEBHOOK_URL else None)
    if email or webhook:
        PoolAlert.objects.filter(pk=alert.pk).update(last_notified_at=timezone.now())
    logger.info("alert_notified", extra={"alert_id": alert.pk, "pool": alert.pool.name,
                                         "condition": alert.condition, "alert_event": event,
                                         "email": email, "webhook": webhook})
    return NotifyResult(email=email, webhook=webhook)
