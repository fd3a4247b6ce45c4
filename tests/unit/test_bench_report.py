"""The benchmark's report: each run owns one section of bench/RESULTS.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.objects import END_MARK, TITLE, write_section


def test_a_run_replaces_its_own_section_and_keeps_the_rest(tmp_path: Path) -> None:
    report = tmp_path / "RESULTS.md"
    write_section(report, "pairs=s3-s3 objects=10", "## first\n\nold figures")
    text = report.read_text()
    assert text.startswith(TITLE) and "old figures" in text

    report.write_text(text.replace(TITLE, TITLE + "\n\nWritten by hand: how to read this."))
    write_section(report, "pairs=s3-swift objects=10", "## second\n\nswift figures")
    write_section(report, "pairs=s3-s3 objects=10", "## first\n\nnew figures")

    text = report.read_text()
    assert "old figures" not in text
    assert "Written by hand: how to read this." in text
    assert text.count(END_MARK) == 2
    assert text.index("new figures") < text.index("## second")  # kept in its place


def test_a_section_without_its_end_is_refused(tmp_path: Path) -> None:
    report = tmp_path / "RESULTS.md"
    write_section(report, "k", "## run")
    report.write_text(report.read_text().replace(END_MARK, ""))
    with pytest.raises(ValueError, match="has no"):
        write_section(report, "k", "## again")
    assert "## run" in report.read_text()  # nothing lost
