"""The application server's one configuration (stock gunicorn, gthread): `make run` (devtools/runner.py
web_command), the tests' fixtures, the benchmarks and docker/Dockerfile all pass ``--config`` this file
and add only ``--bind`` (and, for `make run`, the worker/thread counts from the settings).

gunicorn sits behind the edge proxy (Caddy, devtools/edge.py; docs/operations.md "The edge"): the proxy
reads and bounds every request before it opens an upstream request, so nothing here needs to defend
against slow or malformed clients. What is set here follows from that:
- gthread, 2 processes x 8 threads: chosen by a sweep of single reservations through the whole edge on
  the 2-core machine (workers 2/3/4 x threads 2/4/8, `manage.py bench_http_goals --sweep ...`;
  docs/benchmarks.md "Edge / worker sweep"). More processes than cores lost throughput; 8 threads per
  process beat 4 and 2 (a thread here waits on PostgreSQL only: the proxy holds the slow clients).
  settings WEB_WORKERS/WEB_THREADS (what `make run` passes) and docker/Dockerfile say the same;
- ``keepalive`` longer than the proxy's upstream keep-alive (devtools/edge.py UPSTREAM_KEEPALIVE), so the
  proxy never reuses a connection gunicorn has just closed (a POST on it would fail as a 502);
- no control socket: its default is one path per user (~/.gunicorn/gunicorn.ctl), shared by every
  gunicorn on the machine, and nothing here uses it.
"""
worker_class = "gthread"
workers = 2
threads = 8
keepalive = 75
graceful_timeout = 10
control_socket_disable = True
# The access log is off: the proxy writes one JSON line per request, with the correlation id.
accesslog = None
