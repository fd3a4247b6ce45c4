"""The benchmark's report: each run owns one section of bench/RESULTS.md."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench.objects import TITLE, Run, render, summary, write_section
from bench.report import END_MARK


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
    assert f"{END_MARK}\n\n<!-- bench run pairs=s3-swift" in text  # a blank line between


def test_a_section_without_its_end_is_refused(tmp_path: Path) -> None:
    report = tmp_path / "RESULTS.md"
    write_section(report, "k", "## run")
    report.write_text(report.read_text().replace(END_MARK, ""))
    with pytest.raises(ValueError, match="has no"):
        write_section(report, "k", "## again")
    assert "## run" in report.read_text()  # nothing lost


def _run(tool: str) -> Run:
    return Run(tool, "s3-swift", "full", 10, 10 * 1024, 10, 2.0, 50 * 1024 * 1024, 30, 0)


def test_a_section_written_mid_run_says_it_is_unfinished_and_a_final_one_does_not() -> None:
    args = argparse.Namespace(pairs="s3-swift", objects=10, concurrency=4, event_seconds=60.0)
    when = datetime(2026, 11, 22, tzinfo=UTC)
    runs = [_run("lifeboat")]
    partial = render(runs, {}, "cmd", when, "rclone v1", args, engine="abc", unfinished="cut")
    assert "**Unfinished: 1 passes measured; cut.**" in partial
    assert "| s3-swift | full | lifeboat | 10 |" in partial
    assert "(not run yet)" in partial
    assert "the replication engine of commit abc," in partial  # as taken at the start

    runs.append(_run("rclone"))
    final = render(runs, {}, "cmd", when, "rclone v1", args, engine="abc")
    assert "Unfinished" not in final
    assert "(skipped)" in final  # no event run was asked for
    assert "| s3-swift | full | 1.00 | 1.00 | 1.00 |" in final


def test_a_pass_is_summed_up_on_one_line() -> None:
    line = summary(_run("lifeboat"))
    assert line == (
        "2.0s, 5.0 objects/s, 0.00 MiB/s, peak RSS 50 MiB, 3.00 requests/object, exit 0"
    )


def test_the_probe_benchmark_reports_each_setting_with_its_spread_and_ratio() -> None:
    from bench.probes import Run as ProbeRun
    from bench.probes import schedule_table, throughput_table

    runs = [
        ProbeRun("lifeboat", "throughput", 512, 10.0, 40_000 + 1000 * i, 0, 3.0, repeat=i)
        for i in range(3)
    ] + [
        ProbeRun("blackbox_exporter", "throughput", 512, 10.0, 20_000, 2, 12.0, 2.0, repeat=i)
        for i in range(3)
    ]
    table = throughput_table(runs)
    assert "| 512 | lifeboat | 4,100 (4,000-4,200) | 0.073 (0.071-0.075) | - | 0 " in table
    assert "| 2.05 (2.00-2.10)x |" in table
    assert "| 512 | blackbox_exporter | 2,000 (2,000-2,000) | 0.600 (0.600-0.600) | 0.100" in table
    lag = {"p50": 0.001, "p99": 0.05, "max": 0.08}
    scheduled = [
        ProbeRun("lifeboat", "schedule", 3000, 10.0, 30_000, 0, 2.0, offered=3000.0, lag=lag)
    ]
    assert "| 3,000 (500 x 6) | 3,000 | 3,000 | 1.0 | 50.0 | 80.0 | 0.067 | 0 |" in (
        schedule_table(scheduled)
    )
