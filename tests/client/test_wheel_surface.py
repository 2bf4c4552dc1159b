"""The wheel's package surface, without building the wheel: the public names consumers import,
Django-free imports, an explicit ``__all__`` and modules small enough to read."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import tokenpool_tome
from tokenpool_tome import client, pool_client

PACKAGE = Path(tokenpool_tome.__file__).parent

# Every name `from tokenpool_tome import ...` offered before the shared HTTP layer (issue 18).
PUBLIC_NAMES = {
    "CLIENT_DIRECT", "CallRecord", "CircuitOpenError", "HttpTokenizationLibrary", "IdempotencyKeyReused",
    "InvalidRequest", "NamespaceNotFound", "NotAuthenticated", "NotFound", "PermissionDenied", "Reservation",
    "ReservationNotActive", "Throttled", "TokenPair", "TokenPoolClient", "TokenPoolError", "TokenPoolUnavailable",
    "TokenizationLibrary", "TomeClientConfig", "TomeError", "TomeRequestError", "TomeResponseError",
    "TomeUnavailable", "__version__", "correlation_scope", "get_correlation_id",
}


def test_the_package_exports_every_public_name_it_exported_before():
    assert set(tokenpool_tome.__all__) == PUBLIC_NAMES
    assert len(tokenpool_tome.__all__) == len(PUBLIC_NAMES)
    assert all(hasattr(tokenpool_tome, name) for name in PUBLIC_NAMES)


@pytest.mark.parametrize("module", [client, pool_client], ids=lambda m: m.__name__)
def test_each_client_module_still_exports_its_names(module):
    assert all(getattr(tokenpool_tome, name) is getattr(module, name) for name in module.__all__
               if name in PUBLIC_NAMES)
    assert all(hasattr(module, name) for name in module.__all__)


def test_the_package_init_names_its_imports():
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    assert not [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                and any(alias.name == "*" for alias in node.names)]


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_no_module_is_over_400_lines(path):
    assert len(path.read_text().splitlines()) <= 400


def test_importing_the_package_imports_no_django():
    code = "import sys, tokenpool_tome; print(sorted(m for m in sys.modules if m.split('.')[0] == 'django'))"
    out = subprocess.run([sys.executable, "-c", code], cwd=PACKAGE.parent, capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]"
