"""`kubectl lifeboat` as a new user runs it: the installed kubectl-lifeboat console script,
found by the real kubectl on PATH, against real ResilientApps and a running operator."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sandbox.assets import Assets
from sandbox.world import Sandbox
from tests.fixtures.world import GROUP, PLURAL, VERSION, Apps, wait_for

pytestmark = pytest.mark.integration

PLUGIN = Path(sys.executable).with_name("kubectl-lifeboat")
OK, REFUSED, USAGE, NOT_FOUND = 0, 1, 2, 3


class User:
    """A shell with kubectl and the plugin on PATH and a kubeconfig for the test cluster."""

    def __init__(self, kubectl: Path, kubeconfig: Path, home: Path) -> None:
        self.kubectl = kubectl
        self.kubeconfig = kubeconfig
        self.env = {
            "PATH": f"{kubectl.parent}:{PLUGIN.parent}:/usr/bin:/bin",
            "HOME": str(home),
            "KUBECONFIG": str(kubeconfig),
        }

    def run(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        """``kubectl <args>`` (``kubectl lifeboat ...`` runs the plugin)."""
        return subprocess.run(
            [str(self.kubectl), *args],
            capture_output=True,
            text=True,
            env=self.env,
            check=False,
            timeout=timeout,
        )

    def plugin(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """``kubectl-lifeboat <args>`` directly."""
        return subprocess.run(
            [str(PLUGIN), *args],
            capture_output=True,
            text=True,
            env={**self.env, **env},
            check=False,
            timeout=90,
        )

    def use_namespace(self, namespace: str) -> None:
        result = self.run("config", "set-context", "--current", f"--namespace={namespace}")
        assert result.returncode == 0, result.stderr


@pytest.fixture
def user(sandbox: Sandbox, kube_assets: Assets, tmp_path: Path) -> User:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(sandbox.kube.kubeconfig_path.read_text())
    home = tmp_path / "home"
    home.mkdir()
    return User(kube_assets.kubectl, kubeconfig, home)


def table(output: str) -> list[list[str]]:
    """Rows of a kubectl-style table, split on runs of two or more spaces."""
    return [re.split(r"\s{2,}", line.strip()) for line in output.splitlines() if line.strip()]


# --------------------------------------------------------------------------- discovery


def test_kubectl_finds_the_plugin_and_its_help_speaks_kubectl(user: User) -> None:
    listed = user.run("plugin", "list")
    assert "kubectl-lifeboat" in listed.stdout, listed.stdout + listed.stderr
    helped = user.run("lifeboat", "--help")
    assert helped.returncode == OK
    assert helped.stdout.startswith("usage: kubectl lifeboat")
    for command in ("status", "explain", "failover", "failback", "approve"):
        assert f"    {command} " in helped.stdout
    assert "exit codes" in helped.stdout
    missing = user.run("lifeboat", "failover", "web")
    assert missing.returncode == USAGE
    assert "usage: kubectl lifeboat failover" in missing.stderr
    assert "--to" in missing.stderr


# --------------------------------------------------------------------------- status


def test_status_table_and_json_in_the_context_namespace(user: User, apps: Apps) -> None:
    namespace, name = apps.create()
    apps.wait_serving(namespace, name)
    user.use_namespace(namespace)
    result = user.run("lifeboat", "status")
    assert result.returncode == OK, result.stderr
    rows = table(result.stdout)
    assert rows[0] == ["APP", "ACTIVE", "STATE", "ZONES", "RPO", "LAST FAILOVER"]
    assert rows[1:] == [[name, "use1", "Healthy", "6/6", "-", "-"]]

    everywhere = user.run("lifeboat", "status", "-A")
    assert everywhere.returncode == OK
    rows = table(everywhere.stdout)
    assert rows[0][0] == "NAMESPACE"
    assert [namespace, name, "use1", "Healthy", "6/6", "-", "-"] in rows

    document = json.loads(user.run("lifeboat", "status", name, "-o", "json").stdout)
    assert document == [
        {
            "namespace": namespace,
            "name": name,
            "activeSite": "use1",
            "state": "Healthy",
            "zones": "6/6",
            "rpoSeconds": None,
            "lastFailover": None,
            "epoch": 1,
            "mode": "Automatic",
            "pinnedSite": None,
            "recommendation": None,
        }
    ]
    empty = user.run("lifeboat", "status", "-n", "kube-system")
    assert empty.returncode == OK
    assert empty.stdout == ""
    assert "No ResilientApps found in namespace kube-system" in empty.stderr


def test_status_shows_rpo_and_last_failover_from_the_status(user: User, app_harness: Apps) -> None:
    """RPO is the largest replication RPO; the last failover is shown by age."""
    namespace, name = app_harness.create()
    completed = datetime.now(tz=UTC) - timedelta(minutes=5, seconds=30)

    def stamp(moment: datetime) -> str:
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")

    status: dict[str, Any] = {
        "phase": "Degraded",
        "activeSite": "usw2",
        "epoch": 3,
        "healthyZones": "5/6",
        "lastFailover": {
            "epoch": 3,
            "fromSite": "use1",
            "toSite": "usw2",
            "reason": "every probed zone of active site use1 is Down",
            "decidedTime": stamp(completed - timedelta(seconds=3)),
            "completedTime": stamp(completed),
        },
        "replication": [
            {
                "dataset": "assets",
                "destination": "use1",
                "kind": "Objects",
                "source": "usw2",
                "rpoSeconds": 42.5,
            },
            {
                "dataset": "db",
                "destination": "use1",
                "kind": "Volumes",
                "source": "usw2",
                "rpoSeconds": 310.0,
            },
            {"dataset": "logs", "destination": "use1", "kind": "Objects", "source": "usw2"},
        ],
    }
    app_harness.custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, name, {"status": status}
    )
    result = user.run("lifeboat", "status", "-n", namespace, "-o", "wide")
    assert result.returncode == OK, result.stderr
    rows = table(result.stdout)
    assert rows[0] == [
        "APP",
        "ACTIVE",
        "STATE",
        "ZONES",
        "RPO",
        "LAST FAILOVER",
        "ROUTE",
        "EPOCH",
        "MODE",
        "PINNED",
        "RECOMMENDATION",
    ]
    row = rows[1]
    assert row[:5] == [name, "usw2", "Degraded", "5/6", "5m10s"]
    assert row[5].startswith("5m")  # 5m30s ago, give or take the test's own time
    assert row[6:] == ["use1->usw2", "3", "Automatic", "-", "-"]
    document = json.loads(user.run("lifeboat", "status", "-n", namespace, "-o", "json").stdout)
    assert document[0]["rpoSeconds"] == 310.0
    assert document[0]["lastFailover"]["route"] == "use1->usw2"
    assert 325 <= document[0]["lastFailover"]["ageSeconds"] < 400


# --------------------------------------------------------------------------- operations


def test_failover_explain_and_failback_through_kubectl(user: User, apps: Apps) -> None:
    # The production dwell, not the sandbox's 30 s: on a busy machine the steps below can
    # take longer than 30 s, and the early failback must still fall inside the dwell.
    namespace, name = apps.create(
        lambda body: body["spec"].__setitem__(
            "failover", {**body["spec"].get("failover", {}), "minDwellSeconds": 600}
        )
    )
    apps.wait_serving(namespace, name)

    moved = user.run("lifeboat", "failover", name, "-n", namespace, "--to", "usw2")
    assert moved.returncode == OK, moved.stdout + moved.stderr
    assert "accepted" in moved.stdout
    wait_for(lambda: apps.status(namespace, name).get("activeSite") == "usw2", 30, "usw2")
    wait_for(lambda: apps.dns_weights(namespace, name) == {"use1": 0, "usw2": 100}, 30, "DNS")

    status = json.loads(user.run("lifeboat", "status", name, "-n", namespace, "-o", "json").stdout)
    assert status[0]["activeSite"] == "usw2"
    assert status[0]["lastFailover"]["route"] == "use1->usw2"

    explained = user.run("lifeboat", "explain", name, "-n", namespace)
    assert explained.returncode == OK, explained.stderr
    assert f"ResilientApp {namespace}/{name}" in explained.stdout
    assert "Last failover: use1 -> usw2" in explained.stdout

    nowhere = user.run("lifeboat", "failover", name, "-n", namespace, "--to", "mars")
    assert nowhere.returncode == USAGE
    assert "no site 'mars'" in nowhere.stderr
    assert "use1, usw2" in nowhere.stderr

    # Straight back is refused: the policy's minimum dwell between failovers.
    early = user.run("lifeboat", "failback", name, "-n", namespace)
    assert early.returncode == REFUSED, early.stdout + early.stderr
    assert "refused: " in early.stdout
    assert re.search(r"failover held: dwell: \d+ s of \d+ s", early.stdout), early.stdout
    assert apps.status(namespace, name)["activeSite"] == "usw2"
    forced = user.run("lifeboat", "failback", name, "-n", namespace, "--force")
    assert forced.returncode == OK, forced.stdout + forced.stderr
    wait_for(lambda: apps.status(namespace, name).get("activeSite") == "use1", 30, "failback")


def test_approve_carries_out_a_manual_mode_recommendation(
    user: User, apps: Apps, sandbox: Sandbox
) -> None:
    namespace, name = apps.create(
        lambda body: body["spec"].__setitem__(
            "failover", {**body["spec"].get("failover", {}), "mode": "Manual"}
        )
    )
    apps.wait_serving(namespace, name)
    nothing = user.run("lifeboat", "approve", name, "-n", namespace)
    assert nothing.returncode == REFUSED
    assert "no recommendation to approve" in nothing.stderr

    for endpoint in sandbox.zones.site_endpoints("use1"):
        endpoint.down()
    wait_for(lambda: apps.status(namespace, name).get("recommendation"), 40, "a recommendation")
    listed = table(user.run("lifeboat", "status", "-n", namespace, "-o", "wide").stdout)
    assert listed[1][-1] == "region-failover usw2"
    explained = user.run("lifeboat", "explain", name, "-n", namespace).stdout
    assert f"approve with: kubectl lifeboat approve {name} -n {namespace}" in explained

    approved = user.run("lifeboat", "approve", name, "-n", namespace)
    assert approved.returncode == OK, approved.stderr
    assert "approved" in approved.stdout
    wait_for(lambda: apps.status(namespace, name).get("activeSite") == "usw2", 40, "the failover")


# --------------------------------------------------------------------------- errors


def test_clear_errors_and_exit_codes(user: User, sandbox: Sandbox, tmp_path: Path) -> None:
    missing = user.run("lifeboat", "explain", "no-such-app", "-n", "default")
    assert missing.returncode == NOT_FOUND
    assert "ResilientApp default/no-such-app not found" in missing.stderr
    assert "Traceback" not in missing.stderr

    missing = user.run("lifeboat", "failback", "no-such-app", "-n", "default")
    assert missing.returncode == NOT_FOUND

    both = user.run("lifeboat", "status", "-n", "default", "-A")
    assert both.returncode == USAGE

    dead = tmp_path / "dead.kubeconfig"
    dead.write_text(
        "apiVersion: v1\nkind: Config\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: x, context: {cluster: c, user: u}}]\n"
        "current-context: x\n"
    )
    unreachable = user.plugin("status", KUBECONFIG=str(dead))
    assert unreachable.returncode == NOT_FOUND
    assert "cannot reach the cluster at https://127.0.0.1:1" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr

    nowhere = user.plugin("status", KUBECONFIG=str(tmp_path / "absent"))
    assert nowhere.returncode == NOT_FOUND
    assert "kubeconfig" in nowhere.stderr

    # A user RBAC gives nothing: refused by the API server, and told so.
    stranger = sandbox.kube.service_account_kubeconfig(
        "plugin-strangers", "stranger", tmp_path / "stranger.kubeconfig"
    )
    forbidden = user.plugin("status", "-n", "default", KUBECONFIG=str(stranger))
    assert forbidden.returncode == REFUSED
    assert "forbidden" in forbidden.stderr
    assert "system:serviceaccount:plugin-strangers:stranger" in forbidden.stderr
