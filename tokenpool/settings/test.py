"""pytest (pytest.ini): development, with a private metrics directory per run. Servers that the tests
start as processes run ``tokenpool.settings`` (development) and inherit that directory."""
from monitoring.multiproc import multiproc_dir_configure
from tokenpool.settings.base import PROMETHEUS_MULTIPROC_DIR_FROM_ENV
from tokenpool.settings.development import *  # noqa: F403 - the test layer extends development

PROMETHEUS_MULTIPROC_DIR = multiproc_dir_configure(configured=PROMETHEUS_MULTIPROC_DIR_FROM_ENV, default=None)
