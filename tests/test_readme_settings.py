"""Every environment variable the settings read is in the README's configuration table (issue 21.5:
MONITORING_SNAPSHOT_MINUTES and ALERT_EVALUATE_MINUTES were missing). The settings package is the one
place that reads the environment (docs/architecture.md), so parsing it finds them all."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# env("X", …), env.int("X", …), env.db("X"), …, and "X" in env.ENVIRON
READ = re.compile(r'\benv(?:\.\w+)?\(\s*"(\w+)"|"(\w+)" in env\.ENVIRON')


def settings_variables() -> set[str]:
    found = set()
    for path in (ROOT / "tokenpool" / "settings").glob("*.py"):
        for match in READ.finditer(path.read_text()):
            found.add((match.group(1) or match.group(2)).upper())  # prometheus_multiproc_dir: the old spelling
    return found


def readme_table_variables() -> set[str]:
    text = (ROOT / "README.md").read_text()
    table = text.split("## Configuration (environment variables)", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]+)(?:=[^`]*)?`", row)}


def test_the_parser_finds_what_the_settings_read():
    found = settings_variables()
    assert {"DATABASE_URL", "TOME_PORT", "PORT", "MONITORING_SNAPSHOT_MINUTES", "ALERT_EVALUATE_MINUTES",
            "TOKENPOOL_VAR_DIR"} <= found
    assert len(found) > 60


def test_every_setting_read_from_the_environment_is_in_the_readme_table():
    missing = sorted(settings_variables() - readme_table_variables())
    assert not missing, f"add these to README.md's configuration table: {missing}"
