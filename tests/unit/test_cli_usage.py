"""CLI hygiene across commands: usage errors exit 2 with one clear line, never a
traceback; ``status`` imports no cloud SDK and not kopf."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from controller.cli.main import main, misplaced_global

DOCS = Path(__file__).resolve().parents[2] / "docs" / "simulate"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--log-level", "loud", "status"], "argument --log-level: invalid log level 'loud'"),
        (["status", "--log-level", "debug"], "--log-level is an option of lifeboat itself"),
        (["status", "web", "--log-format=json"], "--log-format is an option of lifeboat"),
        (["simulate", "--log-level", "debug", "a", "b"], "--log-level is an option"),
        (["explain", "web", "--version"], "--version is an option of lifeboat itself"),
        (["run", "--metrics-port", "99999"], "argument --metrics-port: invalid port 99999"),
        (["run", "--metrics-port", "-1"], "invalid port -1: must be 0-65535"),
        (["run", "--metrics-port", "eighty"], "invalid port 'eighty': not a number"),
        (["run", "--metrics-address", "not an address"], "invalid address 'not an address'"),
        (["run", "--health-endpoint", "ftp://x:1/"], "invalid endpoint 'ftp://x:1/'"),
        (["run", "--health-endpoint", "http://0.0.0.0/healthz"], "no port"),
        (["run", "--health-endpoint", "http://0.0.0.0:99999/healthz"], "invalid endpoint"),
        (["run", "--health-endpoint", "http://bad host:1/"], "invalid"),
        (["simulate", str(DOCS / "app.yaml"), str(DOCS / "noisy.yaml"), "-o", "yaml"], "-o"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(argv, prog="lifeboat")
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("lifeboat")


def test_a_bad_log_level_in_the_environment_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: a bad level reached logging.basicConfig and ended in a traceback."""
    monkeypatch.setenv("LIFEBOAT_LOG_LEVEL", "loud")
    with pytest.raises(SystemExit) as stopped:
        main(["status", "--kubeconfig", "/nonexistent"], prog="lifeboat")
    assert stopped.value.code == 2
    assert "invalid log level 'loud'" in capsys.readouterr().err


def test_good_options_are_accepted() -> None:
    assert misplaced_global(["--log-level", "status", "status", "web"], ["status"]) is None
    assert misplaced_global(["status", "--", "--log-level"], ["status"]) is None
    assert misplaced_global(["--log-format", "json", "run", "--log-level=x"], ["run"]) == (
        "--log-level"
    )
    assert main(["--log-level", "WARNING", "status", "--kubeconfig", "/nonexistent"]) == 3


def test_status_imports_no_cloud_sdk_and_not_kopf(tmp_path: Path) -> None:
    """Regression: `kubectl lifeboat status` took seconds importing SDKs it never uses."""
    script = (
        "import sys\n"
        "from controller.cli.main import main\n"
        "code = main(['status', '--kubeconfig', sys.argv[1]], prog='kubectl lifeboat')\n"
        "heavy = sorted(m for m in ('boto3', 'botocore', 'openstack', 'kopf', 'aiohttp')"
        " if m in sys.modules)\n"
        "print(code, heavy)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.stdout.strip() == "3 []"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["drill", "run", "web"], "a Switchover needs --to SITE"),
        (["drill", "run", "web", "--kind", "ZoneEvacuation"], "--zone ZONE goes with --kind"),
        (["drill", "run", "web", "--to", "usw2", "--zone", "us-east-1a"], "--zone ZONE goes"),
        (
            ["drill", "run", "web", "--kind", "ZoneEvacuation", "--zone", "a", "--to", "usw2"],
            "a ZoneEvacuation takes --zone of the active site, not --to",
        ),
    ],
)
def test_drill_run_usage_errors_exit_2_before_any_cluster_is_asked(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    message: str,
) -> None:
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")
    assert main(argv, prog="lifeboat") == 2
    err = capsys.readouterr().err
    assert err.startswith("lifeboat drill run: ") and message in err
