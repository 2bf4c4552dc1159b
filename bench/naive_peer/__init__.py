"""Issue 13 §4's "naive peer": the reservation API a competent team writes in an hour.

A separate, minimal Django project (its own settings, urls and wsgi) that ``manage.py
bench_http_goals`` runs beside TokenPool, on the same PostgreSQL database but in its own schema,
so TokenPool's HTTP reserve rate has a baseline measured the same way in the same minutes
(issue 13's goal: TokenPool ≥ 1.5× this). It is a yardstick, not a product: never deploy it.

- ``schema.py``: the raw SQL that creates, fills and drops its tables (no migrations; nothing
  here touches ``core/migrations``), importable without Django settings.
- ``settings.py``/``urls.py``/``wsgi.py``/``models.py``/``authentication.py``/``views.py``: the peer, run as
  ``gunicorn bench.naive_peer.wsgi:application -k gthread -w 2 --threads 4`` with
  ``DJANGO_SETTINGS_MODULE=bench.naive_peer.settings`` (``schema.gunicorn_command``).
"""
