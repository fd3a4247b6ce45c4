"""`lifeboat status` / `kubectl lifeboat status`: rows, ages, RPO, table; the plugin's name."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from controller.api.annotations import ManualOperations, TailAction, UnreplicatedRequest
from controller.cli import commands
from controller.cli.main import parser, program_name

NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)


def app(name: str = "web", namespace: str = "shop", **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"failover": {"mode": "Manual"}},
        "status": status,
    }


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-3, "0s"),
        (0, "0s"),
        (59.9, "59s"),
        (119, "119s"),
        (120, "2m"),
        (192, "3m12s"),
        (600, "10m"),
        (179 * 60 + 59, "179m"),
        (3 * 3600, "3h"),
        (5 * 3600 + 3 * 60, "5h3m"),
        (30 * 3600, "30h"),
        (3 * 86400 + 4 * 3600, "3d4h"),
        (120 * 86400, "120d"),
        (3 * 365 * 86400, "3y"),
    ],
)
def test_ages_read_like_kubectl(seconds: float, text: str) -> None:
    assert commands.human_duration(seconds) == text


@pytest.mark.parametrize(
    ("rpo", "text"), [(None, "-"), (0.0, "0.0s"), (2.44, "2.4s"), (42.5, "42s"), (310, "5m10s")]
)
def test_rpo_format(rpo: float | None, text: str) -> None:
    assert commands.format_rpo(rpo) == text


def test_summary_takes_the_largest_rpo_and_the_last_failover() -> None:
    summary = commands.AppSummary.of(
        app(
            activeSite="usw2",
            phase="Degraded",
            healthyZones="5/6",
            epoch=3,
            pinnedSite="usw2",
            lastFailover={
                "fromSite": "use1",
                "toSite": "usw2",
                "decidedTime": "2026-05-01T11:54:00Z",
                "completedTime": "2026-05-01T11:54:30Z",
            },
            replication=[
                {"dataset": "a", "rpoSeconds": 12.0},
                {"dataset": "b", "rpoSeconds": 95.5},
                {"dataset": "c"},  # not measured yet
            ],
            recommendation={"id": "r1", "response": "region-failover", "target": "use1"},
        )
    )
    assert summary.rpo_seconds == 95.5
    assert summary.last_failover == NOW - timedelta(minutes=5, seconds=30)
    assert summary.failover_route == "use1->usw2"
    assert summary.recommendation == "region-failover use1"
    assert summary.as_json(NOW)["lastFailover"] == {
        "time": "2026-05-01T11:54:30Z",
        "ageSeconds": 330.0,
        "route": "use1->usw2",
    }
    rows = commands.status_table([summary], NOW, namespaces=True, wide=True)
    assert rows == [
        [
            "NAMESPACE",
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
        ],
        [
            "shop",
            "web",
            "usw2",
            "Degraded",
            "5/6",
            "95s",
            "5m30s",
            "use1->usw2",
            "3",
            "Manual",
            "usw2",
            "region-failover use1",
        ],
    ]


def test_a_new_app_shows_dashes_and_decided_time_when_not_completed() -> None:
    fresh = commands.AppSummary.of({"metadata": {"name": "new", "namespace": "x"}})
    assert commands.status_table([fresh], NOW, namespaces=False, wide=False)[1] == [
        "new",
        "-",
        "-",
        "-",
        "-",
        "-",
    ]
    pending = commands.AppSummary.of(
        app(lastFailover={"fromSite": "a", "toSite": "b", "decidedTime": "2026-05-01T11:59:00Z"})
    )
    assert pending.last_failover == NOW - timedelta(minutes=1)


def test_table_columns_are_aligned() -> None:
    text = commands.render_table([["APP", "STATE"], ["a-long-name", "Healthy"], ["b", "Down"]])
    assert text == (
        "APP           STATE\n"  # three spaces after the widest cell
        "a-long-name   Healthy\n"
        "b             Down\n"
    )


class FakeCluster:
    """Only what status() and explain() read (the commands run end to end elsewhere)."""

    def __init__(self, apps: list[dict[str, Any]]) -> None:
        self._apps = apps

    def apps(self, namespace: str | None) -> list[dict[str, Any]]:
        return [a for a in self._apps if namespace in (None, a["metadata"]["namespace"])]

    def app(self, namespace: str, name: str) -> dict[str, Any]:
        return next(a for a in self.apps(namespace) if a["metadata"]["name"] == name)

    def events(self, namespace: str, name: str, limit: int = 15) -> list[Any]:
        return []


def test_explain_lists_the_restored_volumes_and_their_state() -> None:
    restored = {
        "site": "usw2",
        "epoch": 2,
        "time": "2026-11-22T01:00:00Z",
        "volumes": [
            {
                "dataset": "db",
                "volume": "vol-a",
                "volumeId": "vol-9",
                "zone": "us-west-2a",
                "snapshotId": "snap-1",
                "snapshotTime": "2026-11-22T00:55:00Z",
                "state": "creating",
            },
            {
                "dataset": "db",
                "volume": "vol-b",
                "volumeId": "vol-8",
                "zone": "us-west-2b",
                "snapshotId": "snap-2",
            },
        ],
        "missing": ["db/vol-c"],
    }
    out = io.StringIO()
    cluster = FakeCluster([app(activeSite="usw2", epoch=2, volumeRestores=[restored])])
    assert commands.explain(cluster, "shop", "web", out=out) == commands.EXIT_OK  # type: ignore[arg-type]
    assert (
        "\nVolumes restored at usw2 (epoch 2, 2026-11-22T01:00:00Z):\n"
        "  db/vol-a: vol-9 in us-west-2a from snap-1, data as of 2026-11-22T00:55:00Z: creating\n"
        "  db/vol-b: vol-8 in us-west-2b from snap-2: state not seen yet\n"
        "  db/vol-c: no copy at usw2, not restored\n"
    ) in out.getvalue()


def test_status_needs_a_namespace_for_one_app() -> None:
    with pytest.raises(commands.CommandError) as refused:
        commands.status(FakeCluster([]), None, "web")  # type: ignore[arg-type]
    assert refused.value.code == commands.EXIT_USAGE


def test_status_says_when_there_is_nothing() -> None:
    out, err = io.StringIO(), io.StringIO()
    code = commands.status(FakeCluster([]), "shop", out=out, err=err)  # type: ignore[arg-type]
    assert code == commands.EXIT_OK
    assert out.getvalue() == ""
    assert err.getvalue() == "No ResilientApps found in namespace shop.\n"


def test_exit_codes_are_distinct_and_documented() -> None:
    codes = [
        commands.EXIT_OK,
        commands.EXIT_REFUSED,
        commands.EXIT_USAGE,
        commands.EXIT_NOT_FOUND,
        commands.EXIT_TIMEOUT,
    ]
    assert codes == [0, 1, 2, 3, 4]
    help_text = parser().format_help()
    for code in codes:
        assert f"\n  {code}  " in help_text


@pytest.mark.parametrize(
    ("argv0", "prog"),
    [
        ("/usr/local/bin/kubectl-lifeboat", "kubectl lifeboat"),
        ("kubectl-lifeboat", "kubectl lifeboat"),
        ("/work/.venv/bin/lifeboat", "lifeboat"),
        ("python -m controller.cli.main", "lifeboat"),
    ],
)
def test_the_plugin_names_itself_as_kubectl_does(argv0: str, prog: str) -> None:
    assert program_name(argv0) == prog


def test_the_plugin_help_lists_the_cluster_commands_only() -> None:
    text = parser("kubectl lifeboat").format_help()
    assert text.startswith("usage: kubectl lifeboat")
    listed = {line.split()[0] for line in text.splitlines() if line.startswith("    ")}
    assert {
        "status",
        "explain",
        "failover",
        "failback",
        "approve",
        "pin",
        "unpin",
        "replication",
    } <= listed
    assert not listed & {"run", "demo", "sandbox", "dev", "simulate"}
    assert "run" in parser("lifeboat").format_help()


def test_default_namespace_follows_the_kubeconfig_context(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text(
        "apiVersion: v1\nkind: Config\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:6443'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts:\n"
        "- {name: shop, context: {cluster: c, user: u, namespace: shop}}\n"
        "- {name: bare, context: {cluster: c, user: u}}\n"
        "current-context: shop\n"
    )
    assert commands.default_namespace(str(config), None) == "shop"
    assert commands.default_namespace(str(config), "bare") == "default"
    assert commands.default_namespace(str(tmp_path / "missing"), None) == "default"


class AnnotatingCluster(FakeCluster):
    """Records the annotation patches the request commands send."""

    def __init__(self, apps: list[dict[str, Any]]) -> None:
        super().__init__(apps)
        self.patches: list[dict[str, str | None]] = []

    def annotate(self, namespace: str, name: str, annotations: dict[str, str | None]) -> None:
        self.patches.append(annotations)


def _annotated(**annotations: str) -> dict[str, Any]:
    body = app(activeSite="use1", recommendation={"id": "region-failover/epoch-2/ab"})
    body["spec"]["sites"] = [{"name": "use1"}, {"name": "usw2"}]
    body["metadata"]["annotations"] = annotations
    return body


def test_pin_unpin_and_approve_write_their_annotations() -> None:
    out = io.StringIO()
    cluster = AnnotatingCluster([_annotated()])
    commands.pin(cluster, "shop", "web", None, out=out)  # type: ignore[arg-type]
    commands.approve(cluster, "shop", "web", None, out=out)  # type: ignore[arg-type]
    pinned = AnnotatingCluster([_annotated(**{"lifeboat.dev/pin": "use1"})])
    commands.pin(pinned, "shop", "web", "", out=out)  # type: ignore[arg-type]
    assert cluster.patches == [
        {"lifeboat.dev/pin": "use1"},
        {"lifeboat.dev/approve": "region-failover/epoch-2/ab"},
    ]
    assert pinned.patches == [{"lifeboat.dev/pin": None}]


def test_a_request_is_written_as_the_operator_reads_it() -> None:
    cluster = AnnotatingCluster([_annotated(**{"lifeboat.dev/pin": "use1"})])
    code = commands.request(
        cluster,  # type: ignore[arg-type]
        "shop",
        "web",
        "failover",
        "usw2",
        force=True,
        wait=0,
        out=io.StringIO(),
    )
    assert code == commands.EXIT_TIMEOUT  # no operator here to answer
    (patch,) = cluster.patches
    assert list(patch) == ["lifeboat.dev/request"]  # the pin is left alone
    body = json.loads(patch["lifeboat.dev/request"] or "")
    assert body == {"id": body["id"], "op": "failover", "force": True, "site": "usw2"}


def test_run_refuses_a_secret_recheck_too_short(capsys: pytest.CaptureFixture[str]) -> None:
    from controller.cli.main import main

    assert main(["run", "--secret-recheck-seconds", "1"]) == 2
    assert "--secret-recheck-seconds must be at least 5" in capsys.readouterr().err
    args = parser().parse_args(["run"])
    assert args.secret_recheck_seconds == 60.0


class AnsweringCluster(AnnotatingCluster):
    """Answers an unreplicated-objects request as the operator would, in the status."""

    def annotate(self, namespace: str, name: str, annotations: dict[str, str | None]) -> None:
        super().annotate(namespace, name, annotations)
        asked = json.loads(annotations["lifeboat.dev/unreplicated"] or "")
        self._apps[0]["status"]["unreplicatedRequest"] = {
            "id": asked["id"],
            "action": asked["action"],
            "phase": "Succeeded",
            "objects": 2,
            "message": "2 object(s) (39 bytes) merged into the active site, 0 skipped, 0 failed",
            "time": "2026-01-01T00:00:00Z",
        }


def _with_tail() -> dict[str, Any]:
    body = _annotated()
    body["spec"]["replication"] = {
        "objects": [
            {
                "name": "photos",
                "locations": [
                    {"site": "use1", "bucket": "photos-use1", "prefix": "p/"},
                    {"site": "usw2", "bucket": "photos-usw2"},
                ],
            }
        ]
    }
    body["status"].update(
        activeSite="usw2",
        epoch=2,
        replication=[
            {
                "dataset": "photos",
                "destination": "use1",
                "kind": "Objects",
                "source": "usw2",
                "epoch": 2,
                "unreplicatedObjects": 12,
                "unreplicatedBytes": 3400,
                "unreplicatedKeys": ["orders/1", "orders/2"],
            }
        ],
    )
    return body


def test_unreplicated_objects_are_listed_with_where_to_find_them_all() -> None:
    out = io.StringIO()
    code = commands.unreplicated(
        FakeCluster([_with_tail()]),  # type: ignore[arg-type]
        "shop",
        "web",
        None,
        None,
        wait=0,
        out=out,
    )
    assert code == commands.EXIT_OK
    text = out.getvalue()
    assert "DATASET   SITE   OBJECTS   BYTES\nphotos    use1   12        3400\n" in text
    assert "  orders/1\n  orders/2\n  ... and 10 more\n" in text
    assert "photos-use1/p/.lifeboat/replication/shop/web/photos.json" in text
    nothing = io.StringIO()
    commands.unreplicated(
        FakeCluster([_annotated()]),  # type: ignore[arg-type]
        "shop",
        "web",
        None,
        None,
        wait=0,
        out=nothing,
    )
    assert "no objects of an older epoch wait" in nothing.getvalue()


def test_merge_and_discard_are_asked_by_annotation_and_answered_in_the_status() -> None:
    cluster = AnsweringCluster([_with_tail()])
    out = io.StringIO()
    code = commands.unreplicated(
        cluster,  # type: ignore[arg-type]
        "shop",
        "web",
        "merge",
        "photos",
        wait=5,
        out=out,
    )
    assert code == commands.EXIT_OK
    (patch,) = cluster.patches
    body = json.loads(patch["lifeboat.dev/unreplicated"] or "")
    assert body == {"id": body["id"], "action": "merge", "dataset": "photos"}
    written = {k: v for k, v in patch.items() if v is not None}
    assert ManualOperations.from_annotations(written).unreplicated == UnreplicatedRequest(
        body["id"], TailAction.MERGE, "photos"
    )
    assert "succeeded: 2 object(s)" in out.getvalue()
    with pytest.raises(commands.CommandError) as refused:
        commands.unreplicated(
            cluster,  # type: ignore[arg-type]
            "shop",
            "web",
            "discard",
            "nope",
            wait=0,
        )
    assert refused.value.code == commands.EXIT_USAGE
    assert ManualOperations.from_annotations({"lifeboat.dev/unreplicated": "{bad"}).unreadable == (
        "lifeboat.dev/unreplicated",
    )


def test_explain_says_what_capacity_is_ready_and_which_standby_is_not() -> None:
    sites = [
        {
            "name": "use1",
            "capacity": {
                "appliedTime": "2026-11-22T01:00:00Z",
                "zones": [{"zone": "us-east-1a", "count": 2}, {"zone": "us-east-1b", "count": 2}],
                "readySeconds": 41.5,
            },
        },
        {
            "name": "usw2",
            "capacity": {
                "appliedTime": "2026-11-22T01:00:01Z",
                "zones": [{"zone": "us-west-2a", "count": 1}],
            },
            "readiness": {
                "ready": "False",
                "reasons": ["0/1 instances InService (standby runs 1 per zone)"],
            },
        },
    ]
    out = io.StringIO()
    cluster = FakeCluster([app(activeSite="use1", epoch=1, sites=sites)])
    assert commands.explain(cluster, "shop", "web", out=out) == commands.EXIT_OK  # type: ignore[arg-type]
    assert (
        "\nCapacity:\n"
        "  use1: us-east-1a=2, us-east-1b=2, set 2026-11-22T01:00:00Z: Ready after 41.5s\n"
        "  usw2: us-west-2a=1, set 2026-11-22T01:00:01Z: not Ready yet\n"
        "  usw2 as a standby: not ready: 0/1 instances InService (standby runs 1 per zone)\n"
    ) in out.getvalue()
