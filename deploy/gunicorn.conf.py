"""The application server's one configuration (stock gunicorn, gthread): `make run` (devtools/runner.py
web_command), the tests' fixtures, the benchmarks and docker/Dockerfile all pass ``--config`` this file
and add only ``--bind`` (and, for `make run`, the worker/thread counts from the settings).

gunicorn sits behind the edge proxy (Caddy, devtools/edge.py; docs/operations.md "The edge"): the proxy
reads and bounds every request before it opens an upstream request, so nothing here needs to defend
against slow or malformed clients. What is set here follows from that:
- gthread, 2 processes x 4 threads (docs/benchmarks.md "Web server");
- ``keepalive`` longer than the proxy's upstream keep-alive (devtools/edge.py UPSTREAM_KEEPALIVE), so the
  proxy never reuses a connection gunicorn has just closed (a POST on it would fail as a 502);
- no control socket: its default is one path per user (~/.gunicorn/gunicorn.ctl), shared by every
  gunicorn on the machine, and nothing here uses it.
"""
worker_class = "gthread"
workers = 2
threads = 4
keepalive = 75
graceful_timeout = 10
control_socket_disable = True
# The access log is off: the proxy writes one JSON line per request, with the correlation id.
accesslog = None
