"""pytest (pytest.ini): development, with a private metrics directory per run. Servers that the tests
start as processes run ``tokenpool.settings`` (development) and inherit that directory."""
from monitoring.multiproc import multiproc_dir_configure
from tokenpool.settings import base
from tokenpool.settings.base import PROMETHEUS_MULTIPROC_DIR_FROM_ENV
from tokenpool.settings.development import *  # noqa: F403 - the test layer extends development

PROMETHEUS_MULTIPROC_DIR = multiproc_dir_configure(configured=PROMETHEUS_MULTIPROC_DIR_FROM_ENV, default=None)
# The test client's requests run in-process on a machine shared by many test runs: a query slowed past
# 3 s by load must not turn into a 503 there. The deadline itself is tested against real servers
# (tests/edge/test_database_freeze.py), which run the development settings' 3 s.
DB_REQUEST_QUERY_TIMEOUT_SECONDS = 30.0
# A `make run` of this checkout beside the tests must not redirect them (var/run.json): the environment only.
TOME_PORT = base.env.int("TOME_PORT", default=8900)
TOME_BASE_URL = base.env("TOME_BASE_URL", default=f"http://127.0.0.1:{TOME_PORT}")
