"""The emulator's application: routing, auth, validation, fault injection and the request log,
independent of the HTTP server in ``server.py`` (which parses requests into ``Request`` and writes
``Response``)."""
from __future__ import annotations

import hmac
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from psycopg_pool import PoolTimeout

from devtools.tome_emulator import tokens as token_shapes
from devtools.tome_emulator.faults import ERROR_CODES, Faults, FaultSettings, InvalidFaults, Telemetry
from devtools.tome_emulator.vault import Vault, VaultError
from tome import TOME_BATCH_LIMIT

logger = logging.getLogger("tome.emulator")

OPERATIONS = ("generate", "tokenize", "detokenize", "lookup")
MAX_ITEM_LENGTH = 1024
MAX_BODY_BYTES = 16 * 1024 * 1024
NAMESPACE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
PREFIX_PATTERN = re.compile(r"^[a-z0-9_-]{1,16}$")
RETRY_AFTER_SECONDS = "1"


@dataclass(frozen=True)
class EmulatorConfig:
    host: str = "127.0.0.1"
    port: int = 8900
    client_tokens: tuple[str, ...] = ("dev-tome-token",)
    admin_token: str = "dev-tome-admin"
    max_batch: int = TOME_BATCH_LIMIT


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Any  # http.client.HTTPMessage: case-insensitive get()
    body: bytes
    correlation_id: str


@dataclass
class Response:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    # Set for namespace calls only; what the request log line carries.
    namespace: str | None = None
    operation: str | None = None
    items: int | None = None
    fault: str | None = None
    hold_seconds: float = 0.0  # timeout injection: answer only after this long


def _error(exc: ApiError) -> Response:
    headers = dict(exc.headers)
    if exc.status in (429, 503):
        headers.setdefault("Retry-After", RETRY_AFTER_SECONDS)
    return Response(exc.status, {"error": {"code": exc.code, "message": exc.message}}, headers)


def _invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_request", message)


class EmulatorApp:
    """Everything but socket I/O, so the request flow reads top to bottom."""

    def __init__(self, *, config: EmulatorConfig, vault: Vault, faults: Faults, telemetry: Telemetry) -> None:
        self.config, self.vault, self.faults, self.telemetry = config, vault, faults, telemetry
        self._client_tokens = [t.encode("utf-8") for t in config.client_tokens]
        self._admin_token = config.admin_token.encode("utf-8")
        self._routes: list[tuple[re.Pattern[str], dict[str, Callable[..., Response]]]] = [
            (re.compile(r"^/healthz$"), {"GET": self._healthz}),
            (re.compile(r"^/v1/namespaces/([^/]+)/([^/]+)$"), {"POST": self._namespace_call}),
            (re.compile(r"^/v1/admin/namespaces$"), {"GET": self._namespaces_list}),
            (re.compile(r"^/v1/admin/namespaces/([^/]+)$"), {"PUT": self._namespace_put}),
            (re.compile(r"^/v1/admin/faults$"), {"GET": self._faults_get, "PUT": self._faults_put}),
            (re.compile(r"^/v1/admin/stats$"), {"GET": self._stats_get}),
            (re.compile(r"^/v1/admin/stats/reset$"), {"POST": self._stats_reset}),
            (re.compile(r"^/v1/admin/requests$"), {"GET": self._requests_get}),
        ]

    def handle(self, request: Request) -> Response:
        for pattern, methods in self._routes:
            match = pattern.match(request.path)
            if match is None:
                continue
            handler = methods.get(request.method)
            if handler is None:
                allowed = ", ".join(sorted(methods))
                return _error(ApiError(405, "method_not_allowed",
                                       f"Method {request.method} is not allowed here; use {allowed}.",
                                       headers={"Allow": allowed}))
            try:
                return handler(request, *match.groups())
            except ApiError as exc:
                return _error(exc)
        return _error(ApiError(404, "not_found", "No such endpoint."))

    # --- auth and body --------------------------------------------------------------------------
    @staticmethod
    def _bearer(request: Request) -> bytes | None:
        header = request.headers.get("Authorization") or ""
        scheme, _, credential = header.partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            return None
        return credential.strip().encode("utf-8")

    def _authenticate_client(self, request: Request) -> str:
        credential = self._bearer(request)
        # compare_digest against every configured token: no early exit that leaks which one matched
        matched = False
        for token in self._client_tokens:
            matched |= credential is not None and hmac.compare_digest(credential, token)
        if not matched:
            raise ApiError(401, "unauthorized", "Missing or unknown client token.")
        return credential.decode("utf-8")

    def _authenticate_admin(self, request: Request) -> None:
        credential = self._bearer(request)
        if credential is None or not hmac.compare_digest(credential, self._admin_token):
            raise ApiError(401, "unauthorized", "Missing or unknown admin token.")

    @staticmethod
    def _json_object(request: Request) -> dict[str, Any]:
        try:
            payload = json.loads(request.body.decode("utf-8")) if request.body else None
        except (UnicodeDecodeError, ValueError):
            raise _invalid("Request body is not valid JSON.") from None
        if not isinstance(payload, dict):
            raise _invalid("Request body must be a JSON object.")
        return payload

    def _strings(self, payload: dict[str, Any], key: str) -> list[str]:
        items = payload.get(key)
        if not isinstance(items, list):
            raise _invalid(f"'{key}' must be an array of strings.")
        if not items:
            raise _invalid(f"'{key}' must hold at least one item.")
        if len(items) > self.config.max_batch:
            raise ApiError(400, "batch_too_large",
                           f"At most {self.config.max_batch} items per call; got {len(items)}.")
        for index, item in enumerate(items):
            if not isinstance(item, str):
                raise _invalid(f"'{key}[{index}]' must be a string.")
            if not 1 <= len(item) <= MAX_ITEM_LENGTH:
                raise _invalid(f"'{key}[{index}]' must be 1 to {MAX_ITEM_LENGTH} characters long.")
            if "\x00" in item:  # PostgreSQL text cannot hold NUL
                raise _invalid(f"'{key}[{index}]' must not contain NUL characters.")
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate such as "\ud800" decoded from JSON
                raise _invalid(f"'{key}[{index}]' is not valid Unicode.") from None
        return items

    def _count(self, payload: dict[str, Any]) -> int:
        count = payload.get("count")
        if isinstance(count, bool) or not isinstance(count, int):
            raise _invalid("'count' must be an integer.")
        if count < 1:
            raise _invalid("'count' must be at least 1.")
        if count > self.config.max_batch:
            raise ApiError(400, "batch_too_large", f"At most {self.config.max_batch} tokens per call; got {count}.")
        return count

    # --- namespace operations -------------------------------------------------------------------
    def _namespace_call(self, request: Request, ns: str, operation: str) -> Response:
        if operation not in OPERATIONS:
            raise ApiError(404, "not_found", "No such endpoint.")
        started = time.perf_counter()
        try:
            response = self._namespace_response(request, ns, operation)
        except Exception:  # noqa: BLE001 - a bug still answers (and is counted as) a 500
            logger.exception("unhandled error", extra={"namespace": ns, "operation": operation,
                                                       "correlation_id": request.correlation_id})
            response = _error(ApiError(500, "internal_error", "Unexpected emulator error."))
        response.namespace, response.operation = ns, operation
        # Recorded before any injected hold so a caller that gave up already sees its call counted.
        self.telemetry.record(namespace=ns, operation=operation, status=response.status,
                              correlation_id=request.correlation_id, items=response.items,
                              duration_ms=(time.perf_counter() - started) * 1000, fault=response.fault)
        return response

    def _namespace_response(self, request: Request, ns: str, operation: str) -> Response:
        settings = self.faults.snapshot()
        if settings.outage:
            response = _error(ApiError(503, "unavailable", "TOME is unavailable (injected outage)."))
            response.fault = "outage"
            return response
        delay = self.faults.delay_seconds(settings)
        if delay:
            time.sleep(delay)
        call: dict[str, int | None] = {"items": None}  # known once the body is parsed; on errors too
        try:
            return self._namespace_operation(request, ns, operation, settings, call)
        except ApiError as exc:
            response = _error(exc)
        except VaultError as exc:
            response = _error(ApiError(exc.status, exc.code, str(exc)))
        except (psycopg.OperationalError, PoolTimeout):
            # Database down or every pooled connection busy for 30 s: retryable, like real TOME's 503.
            logger.warning("vault unavailable", exc_info=True,
                           extra={"namespace": ns, "operation": operation, "correlation_id": request.correlation_id})
            response = _error(ApiError(503, "unavailable", "The vault database is unavailable."))
        response.items = call["items"]
        return response

    def _namespace_operation(self, request: Request, ns: str, operation: str, settings: FaultSettings,
                             call: dict[str, int | None]) -> Response:
        client_token = self._authenticate_client(request)
        if not NAMESPACE_NAME.match(ns):
            raise ApiError(404, "namespace_not_found", "Namespace does not exist.")
        namespace = self.vault.namespace_get(name=ns)
        payload = self._json_object(request)
        count, key, batch = 0, None, []
        if operation == "generate":
            count = self._count(payload)
            call["items"] = count
            key = request.headers.get("Idempotency-Key")
            if key is not None and not 1 <= len(key) <= 255:
                raise _invalid("Idempotency-Key must be 1 to 255 characters long.")
        else:
            batch = self._strings(payload, "tokens" if operation == "detokenize" else "values")
            call["items"] = len(batch)
        if self.faults.roll(settings.error_rate):
            status = settings.error_status
            response = _error(ApiError(status, ERROR_CODES[status], f"Injected fault: {ERROR_CODES[status]}."))
            response.fault, response.items = "error", call["items"]
            return response
        if operation == "generate":
            body: dict[str, Any] = {"tokens": self.vault.generate(
                namespace=namespace, count=count, idempotency_key=key, client_token=client_token)}
        elif operation == "tokenize":
            body = {"tokens": self.vault.tokenize(namespace=namespace, values=batch)}
        elif operation == "detokenize":
            body = {"values": self.vault.detokenize(namespace=namespace, tokens=batch)}
        else:
            body = {"tokens": self.vault.lookup(namespace=namespace, values=batch)}
        response = Response(200, body, items=call["items"])
        # Timeout injection answers late *after* the work is done: the realistic "did it happen?" case.
        if self.faults.roll(settings.timeout_rate):
            response.fault, response.hold_seconds = "timeout", settings.timeout_seconds
        return response

    # --- health and admin -----------------------------------------------------------------------
    def _healthz(self, request: Request) -> Response:
        if self.faults.snapshot().outage:
            raise ApiError(503, "unavailable", "TOME is unavailable (injected outage).")
        if not self.vault.ping():
            raise ApiError(503, "unavailable", "The vault database is unreachable.")
        return Response(200, {"status": "ok"})

    def _namespaces_list(self, request: Request) -> Response:
        self._authenticate_admin(request)
        return Response(200, {"namespaces": [ns.public() for ns in self.vault.namespace_list()]})

    def _namespace_put(self, request: Request, ns: str) -> Response:
        self._authenticate_admin(request)
        if not NAMESPACE_NAME.match(ns):
            raise _invalid("Namespace names are 1 to 63 letters, digits, '_', '.' or '-'.")
        payload = self._json_object(request)
        token_format = payload.get("format")
        if token_format not in token_shapes.FORMATS:
            raise _invalid(f"'format' must be one of {sorted(token_shapes.FORMATS)}.")
        prefix = payload.get("prefix")
        if token_format == "numeric16":
            if prefix not in (None, ""):
                raise _invalid("numeric16 namespaces take no prefix.")
            prefix = ""
        else:
            prefix = token_shapes.DEFAULT_PREFIX if prefix is None else prefix
            if not isinstance(prefix, str) or not PREFIX_PATTERN.match(prefix):
                raise _invalid("'prefix' must be 1 to 16 characters of a-z, 0-9, '_' or '-'.")
        try:
            namespace, created = self.vault.namespace_ensure(name=ns, token_format=token_format, prefix=prefix)
        except VaultError as exc:
            raise ApiError(exc.status, exc.code, str(exc)) from None
        return Response(201 if created else 200, namespace.public())

    def _faults_get(self, request: Request) -> Response:
        self._authenticate_admin(request)
        return Response(200, asdict(self.faults.snapshot()))

    def _faults_put(self, request: Request) -> Response:
        self._authenticate_admin(request)
        try:
            settings = self.faults.update(self._json_object(request))
        except InvalidFaults as exc:
            raise _invalid(str(exc)) from None
        logger.info("faults changed", extra={"faults": asdict(settings)})
        return Response(200, asdict(settings))

    def _stats_get(self, request: Request) -> Response:
        self._authenticate_admin(request)
        return Response(200, self.telemetry.stats())

    def _stats_reset(self, request: Request) -> Response:
        self._authenticate_admin(request)
        self.telemetry.reset()
        return Response(200, self.telemetry.stats())

    def _requests_get(self, request: Request) -> Response:
        self._authenticate_admin(request)
        raw = request.query.get("limit", ["100"])[-1]
        if not raw.isdigit() or not 1 <= int(raw) <= self.telemetry.capacity:
            raise _invalid(f"'limit' must be an integer between 1 and {self.telemetry.capacity}.")
        return Response(200, {"requests": self.telemetry.recent(limit=int(raw))})
