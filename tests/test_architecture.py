"""The layering of docs/architecture.md, checked on the source of the whole tree: runtime apps sit on
floors and import only lower floors (not even inside a function); no runtime app imports tooling or
the project package; the project package reaches apps only through their public modules; the client
wheel imports nothing of the project. Walks the tree with ``ast``; no Django needed."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Runtime apps by floor, bottom first: a unit imports only units on a lower floor (same floor: not
# each other). ``api`` is the HTTP plumbing (auth class, error mapping, middleware) any app above it uses.
FLOORS: dict[str, int] = {
    "common": 0,
    "tome": 1, "keys": 1,
    "api": 2,
    "pool": 3,
    "onboarding": 4,
    "refill": 5,
    "monitoring": 6,
}
TOOLING = frozenset({"devtools", "bench", "loadtest"})
PROJECT = "tokenpool"
WHEEL = "tokenpool_tome"  # the client library: Django-free, imports nothing of the project
HISTORY = "core"  # migrations of the single-app layout only
# What the project package may import of an app: its package root and its URL modules, plus these.
PROJECT_PUBLIC = frozenset({"monitoring.multiproc", "devtools.embedded_db"})
SKIP_DIRS = frozenset({"tests", "docs", "docker", "templates", "requirements", "var", "dist", "build"})


def _unit(module: str) -> str | None:
    head = module.split(".")[0]
    if head in FLOORS or head in TOOLING or head in (PROJECT, WHEEL, HISTORY):
        return head
    return None


def _imports(path: Path, package: str) -> list[tuple[str, int]]:
    """Every module imported anywhere in ``path`` (function bodies included), with its line;
    relative imports are resolved against ``package``; ``from pkg import b`` (a package root or a
    relative ``from .. import b``) yields ``pkg.b``, since ``b`` is then usually a module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if "." in base:
                found.append((base, node.lineno))
            else:
                found += [(f"{base}.{alias.name}".lstrip("."), node.lineno) for alias in node.names]
    return found


def _sources(root: Path) -> list[Path]:
    return [p for p in sorted(root.rglob("*.py"))
            if not (set(p.relative_to(root).parts[:-1]) & SKIP_DIRS) and ".venv" not in p.parts
            and "migrations" not in p.parts]


def _edges(root: Path) -> list[tuple[str, str, str, str]]:
    """(importing unit, imported module, imported unit, where) for every import between units."""
    edges = []
    for path in _sources(root):
        rel = path.relative_to(root)
        source = _unit(rel.parts[0].removesuffix(".py"))
        if source is None:
            continue
        package = ".".join(rel.parts[:-1])
        for module, line in _imports(path, package):
            target = _unit(module)
            if target is not None and target != source:
                edges.append((source, module, target, f"{rel}:{line}"))
    return edges


def _public_to_project(root: Path, module: str) -> bool:
    """An app's package root (or a name defined in it), its URL modules, or PROJECT_PUBLIC."""
    parts = module.split(".")
    if module in PROJECT_PUBLIC or len(parts) == 1 or parts[-1].endswith("urls"):
        return True
    is_module = (root.joinpath(*parts).with_suffix(".py")).exists() or root.joinpath(*parts).is_dir()
    return len(parts) == 2 and not is_module


def _violations(root: Path) -> list[str]:
    wrong = []
    for source, module, target, where in _edges(root):
        if source in FLOORS:
            if target in FLOORS and FLOORS[target] >= FLOORS[source]:
                wrong.append(f"{where}: {source} (floor {FLOORS[source]}) imports {module} (floor {FLOORS[target]})")
            elif target in TOOLING or target in (PROJECT, HISTORY):
                wrong.append(f"{where}: runtime app {source} imports {module}")
        elif source == WHEEL:
            wrong.append(f"{where}: the client wheel imports {module}")
        elif source == PROJECT and target in FLOORS | dict.fromkeys(TOOLING):
            if not _public_to_project(root, module):
                wrong.append(f"{where}: the project package imports {module}, not a public module of {target}")
        elif source == HISTORY and target not in FLOORS:
            wrong.append(f"{where}: a historical migration module imports {module}")
    return wrong


def test_every_top_level_package_has_a_place_in_the_layering():
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists() and p.name not in SKIP_DIRS}
    unplaced = packages - set(FLOORS) - TOOLING - {PROJECT, WHEEL, HISTORY}
    assert not unplaced, f"add {sorted(unplaced)} to FLOORS or TOOLING here and in docs/architecture.md"


def test_the_tree_follows_the_layering():
    wrong = _violations(ROOT)
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


@pytest.mark.parametrize(("planted_in", "code", "complaint"), [
    ("pool/services/x.py", "def f():\n    from monitoring.selectors import pool_health\n", "floor"),
    ("keys/x.py", "from tome import provider\n", "floor"),
    ("refill/x.py", "from bench import claim_bench\n", "runtime app refill imports bench"),
    ("pool/x.py", "from tokenpool.settings import base\n", "runtime app pool imports tokenpool"),
    ("tokenpool/x.py", "from pool.services.claim import claim_pairs\n", "not a public module"),
    ("tokenpool_tome/x.py", "from pool import models\n", "client wheel"),
    ("onboarding/x.py", "from .. import monitoring\n", "floor"),
])
def test_the_checker_fails_on_a_planted_wrong_import(tmp_path, planted_in, code, complaint):
    planted = tmp_path / planted_in
    planted.parent.mkdir(parents=True)
    planted.write_text(code, encoding="utf-8")
    for module in ("pool/services/claim.py", "tome/provider.py", "bench/claim_bench.py", "pool/models.py"):
        (tmp_path / module).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / module).touch()
    wrong = _violations(tmp_path)
    assert len(wrong) == 1 and complaint in wrong[0], wrong


def test_allowed_imports_pass_the_checker(tmp_path):
    for planted_in, code in [("monitoring/x.py", "from pool.selectors import pool_get\nfrom tome import provider\n"),
                             ("tokenpool/urls.py", "from django.urls import include\nimport pool.urls\n"),
                             ("bench/x.py", "from pool.services import claim\nfrom devtools import runner\n")]:
        (tmp_path / planted_in).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / planted_in).write_text(code, encoding="utf-8")
    assert _violations(tmp_path) == []
