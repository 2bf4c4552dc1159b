"""`make bench` rewrites only its marked section of docs/benchmarks.md and keeps the blocks of
benchmarks it did not run this time (``--only``)."""
from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench import suite as bench_suite

FACTS = {"commit": "abc1234", "cpu": "Test CPU", "cores": "2", "ram": "4.0 GiB", "os": "Linux",
         "python": "3.11.7", "postgres": "18.4"}


def _result(name: str, output: str) -> dict:
    bench = next(b for b in bench_suite.SUITE if b.name == name)
    return {"bench": bench, "command": f"python manage.py {name}", "status": 0, "output": output, "seconds": 3.0,
            "started": datetime(2026, 11, 29, 20, 0, tzinfo=UTC), "load": (1.5, 2.5)}


@pytest.fixture
def doc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "benchmarks.md"
    path.write_text("# Benchmarks\n\nHand-written analysis.\n\n## Refill\n\nMore analysis.\n")
    monkeypatch.setattr(bench_suite, "DOC", path)
    return path


def test_the_section_is_appended_then_replaced_and_the_analysis_is_kept(doc: Path) -> None:
    first, second = bench_suite.SUITE[0].name, bench_suite.SUITE[-1].name
    # A benchmark's output may carry headings of its own (bench_claim prints "### cold" tables).
    blocks = {first: bench_suite.render_block(_result(first, "numbers one")),
              second: bench_suite.render_block(_result(second, "numbers two\n### cold: a table\nits last line"))}
    bench_suite.write_doc(bench_suite.render(blocks, FACTS))
    text = doc.read_text()
    assert text.startswith("# Benchmarks\n\nHand-written analysis.\n\n## Refill\n\nMore analysis.\n")
    assert text.count(bench_suite.BEGIN) == text.count(bench_suite.END) == 1
    assert "numbers one" in text and "numbers two" in text and "load average 1.5 → 2.5" in text

    # A later --only run of the first benchmark replaces its block and keeps the other one.
    merged = bench_suite.previous_blocks()
    assert set(merged) == {first, second}
    merged[first] = bench_suite.render_block(_result(first, "numbers three"))
    bench_suite.write_doc(bench_suite.render(merged, FACTS))
    text = doc.read_text()
    assert "numbers three" in text and "numbers two" in text and "numbers one" not in text
    assert "### cold: a table\nits last line" in text  # the kept block kept whole
    assert text.index("numbers three") < text.index("numbers two")  # SUITE order
    assert "More analysis." in text and text.count(bench_suite.BEGIN) == 1


def test_quick_mode_swaps_in_the_smaller_values() -> None:
    bench = next(b for b in bench_suite.SUITE if b.name == "loadtest-find-max")
    argv = bench_suite._argv(bench, quick=True)
    assert argv[argv.index("--duration") + 1] == "3" and argv[argv.index("--find-max-limit") + 1] == "40"
    assert "var/bench/loadtest-find-max.json" in argv
