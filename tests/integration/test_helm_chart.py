"""The Helm chart (charts/lifeboat): lint, render, schema, agreement with manifests/, and
installation into the real test API server (server-side dry run, then a real install).

helm is built from its Go module once per machine (tests/fixtures/helm.py); the
ServiceMonitor, PrometheusRule and AlertmanagerConfig CRDs come from the pinned
prometheus-operator module.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from hack import monitoring
from hack.generate import repo_root
from sandbox.assets import Assets
from sandbox.kube import KubeControlPlane
from sandbox.world import manifests_dir

pytestmark = pytest.mark.integration

CHART = repo_root() / "charts" / "lifeboat"
RELEASE = "lb-test"
NAMESPACE = "lifeboat-chart"
MONITORING_NAMESPACE = "lifeboat-chart-monitoring"

NON_DEFAULT: dict[str, Any] = {
    "replicaCount": 2,
    "serviceAccount": {
        "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/lifeboat"}
    },
    "watchNamespaces": ["shop", "payments"],
    # peers.name runs one replica per peer cluster (the chart refuses it with two): its
    # rendering is tested on its own below.
    "secretRecheckSeconds": 30,
    "resources": {
        "requests": {"cpu": "100m", "memory": "256Mi"},
        "limits": {"cpu": "1", "memory": "1Gi"},
    },
    "image": {"tag": "0.1.0-rc1", "pullPolicy": "Always"},
    "logLevel": "debug",
    "leaderElection": {"leaseSeconds": 20},
    "metrics": {"port": 9090, "service": {"port": 9090}},
    "health": {"port": 9091},
    "serviceMonitor": {
        "enabled": True,
        "labels": {"release": "kube-prometheus-stack"},
        "interval": "15s",
    },
    "prometheusRule": {
        "enabled": True,
        "labels": {"release": "kube-prometheus-stack"},
        "alerts": {
            "disabled": ["LifeboatPeerUnheard", "LifeboatFailoverStarted"],
            "labels": {"team": "sre", "severity": "page"},
            "runbookUrlBase": "https://wiki.example/lifeboat/runbooks/",
            "noRecentDrillDays": 30,
        },
    },
    "alertmanagerConfig": {
        "enabled": True,
        "namespace": MONITORING_NAMESPACE,
        "labels": {"alertmanagerConfig": "lifeboat"},
    },
    "dashboards": {
        "enabled": True,
        "namespace": MONITORING_NAMESPACE,
        "label": "grafana_dashboard",
        "labelValue": "lifeboat",
        "annotations": {"grafana_folder": "Lifeboat"},
    },
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops"}],
    "podAnnotations": {"example.com/team": "sre"},
    # OpenShift's restricted-v2 SCC picks the user and group: the chart must not.
    "podSecurityContext": {
        "runAsNonRoot": True,
        "runAsUser": None,
        "runAsGroup": None,
        "seccompProfile": {"type": "RuntimeDefault"},
    },
    "extraVolumes": [{"name": "keystone-ca", "configMap": {"name": "keystone-ca"}}],
    "extraVolumeMounts": [
        {"name": "keystone-ca", "mountPath": "/etc/lifeboat/ca", "readOnly": True}
    ],
    "crds": {"keep": False, "annotations": {"example.com/owner": "platform"}},
    "rbac": {"aggregateToDefaultRoles": False},
}
LIFEBOAT_CRDS = sorted(
    yaml.safe_load(path.read_text("utf-8"))["metadata"]["name"]
    for path in (CHART / "files" / "crds").glob("*.yaml")
)

SYNTHETIC_RULES = """groups:
  - name: synthetic.rules
    rules:
      - alert: SyntheticZoneDown
        expr: lifeboat_zone_healthy == 0
        for: 2m
        labels: {severity: warning}
        annotations:
          summary: "Zone {{ $labels.zone }} of {{ $labels.namespace }}/{{ $labels.app }} is down"
"""
SYNTHETIC_DASHBOARD = {
    "title": "Synthetic {{zone}}",
    "panels": [{"type": "timeseries", "targets": [{"legendFormat": "{{zone}} ${site}"}]}],
}


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def helm_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """helm's config, cache and data in a scratch directory, never the user's."""
    home = tmp_path_factory.mktemp("helm-home")
    return {
        **os.environ,
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_DATA_HOME": str(home / "data"),
    }


def run_helm(
    helm: Path, env: dict[str, str], *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(helm), *args], capture_output=True, text=True, env=env, check=False, timeout=300
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result


def values_file(tmp_path: Path, values: dict[str, Any]) -> Path:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return path


def render(
    helm: Path,
    env: dict[str, str],
    *args: str,
    chart: Path = CHART,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
) -> list[dict[str, Any]]:
    text = run_helm(helm, env, "template", release, str(chart), "-n", namespace, *args).stdout
    return [d for d in yaml.safe_load_all(text) if d]


def one(documents: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in documents if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''} in {[d['kind'] for d in documents]}"
    return found[0]


def kinds(documents: list[dict[str, Any]]) -> list[str]:
    return sorted(d["kind"] for d in documents)


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["operator"]
    return dict(containers[0])


def rule_files(chart: Path = CHART) -> list[Path]:
    return sorted([*chart.glob("rules/*.yaml"), *chart.glob("rules/*.yml")])


def dashboard_files(chart: Path = CHART) -> list[Path]:
    return sorted(chart.glob("dashboards/*.json"))


@pytest.fixture
def chart_with_extras(tmp_path: Path) -> Path:
    """A copy of the chart with one more rules file and dashboard, awkwardly named and
    full of the braces Prometheus and Grafana use (they must pass through verbatim)."""
    copy = tmp_path / "lifeboat"
    shutil.copytree(CHART, copy)
    (copy / "rules").mkdir(exist_ok=True)
    (copy / "dashboards").mkdir(exist_ok=True)
    (copy / "rules" / "Synthetic Alerts.yaml").write_text(SYNTHETIC_RULES, encoding="utf-8")
    (copy / "dashboards" / "Synthetic_Overview.json").write_text(
        json.dumps(SYNTHETIC_DASHBOARD), encoding="utf-8"
    )
    return copy


# --------------------------------------------------------------------------- lint, render


def test_lint_passes_strictly_with_default_and_non_default_values(
    helm: Path, helm_env: dict[str, str], tmp_path: Path
) -> None:
    run_helm(helm, helm_env, "lint", "--strict", str(CHART))
    run_helm(
        helm,
        helm_env,
        "lint",
        "--strict",
        str(CHART),
        "-f",
        str(values_file(tmp_path, NON_DEFAULT)),
    )


def test_defaults_render_a_hardened_single_operator(helm: Path, helm_env: dict[str, str]) -> None:
    documents = render(helm, helm_env)
    assert kinds(documents) == [
        "ClusterRole",
        "ClusterRole",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "CustomResourceDefinition",
        "CustomResourceDefinition",
        "CustomResourceDefinition",
        "Deployment",
        "FlowSchema",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ]
    flow = one(documents, "FlowSchema")["spec"]
    assert flow["priorityLevelConfiguration"]["name"] == "leader-election"
    assert flow["rules"][0]["resourceRules"][0]["namespaces"] == [NAMESPACE]
    deployment = one(documents, "Deployment")
    assert deployment["metadata"]["namespace"] == NAMESPACE
    assert deployment["spec"]["replicas"] == 1
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == f"{RELEASE}-lifeboat"
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    operator = container(deployment)
    assert operator["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert operator["image"] == "ghcr.io/lifeboat-dev/lifeboat:0.1.0"
    assert operator["args"] == [
        "--log-level=info",
        "--log-format=json",
        "run",
        "--metrics-port=8080",
        "--health-endpoint=http://0.0.0.0:8081/healthz",
        "--secret-recheck-seconds=60",
        "--lease-seconds=10",
    ]
    assert {p["name"]: p["containerPort"] for p in operator["ports"]} == {
        "metrics": 8080,
        "health": 8081,
    }
    for probe in ("livenessProbe", "readinessProbe"):
        assert operator[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert operator["resources"]["limits"]["memory"] == "512Mi"
    service = one(documents, "Service")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert "annotations" not in one(documents, "ServiceAccount")["metadata"]
    # The CRDs are templates (upgraded by helm upgrade) kept by helm uninstall.
    crds = [d for d in documents if d["kind"] == "CustomResourceDefinition"]
    assert sorted(d["metadata"]["name"] for d in crds) == LIFEBOAT_CRDS
    for crd in crds:
        assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
        shipped = yaml.safe_load(
            (
                manifests_dir() / "crds" / f"lifeboat.dev_{crd['spec']['names']['plural']}.yaml"
            ).read_text("utf-8")
        )
        assert crd["spec"] == shipped["spec"]  # numbers, CEL rules and all survive helm
    # ResilientApps and FailoverDrills join the built-in view/edit/admin roles; status and
    # CloudProviders do not.
    view = one(documents, "ClusterRole", f"{RELEASE}-lifeboat-view")
    edit = one(documents, "ClusterRole", f"{RELEASE}-lifeboat-edit")
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert "rbac.authorization.k8s.io/aggregate-to-view" not in edit["metadata"]["labels"]
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    for role in (view, edit):
        for rule in role["rules"]:
            assert "cloudproviders" not in rule["resources"]
            if set(rule["verbs"]) - {"get", "list", "watch"}:
                assert rule["resources"] == ["resilientapps", "failoverdrills"]


def test_non_default_values_render_everything_asked_for(
    helm: Path, helm_env: dict[str, str], tmp_path: Path, chart_with_extras: Path
) -> None:
    values = values_file(tmp_path, NON_DEFAULT)
    documents = render(helm, helm_env, "-f", str(values), chart=chart_with_extras)
    account = one(documents, "ServiceAccount")
    assert account["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/lifeboat"
    }
    deployment = one(documents, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    pod = deployment["spec"]["template"]["spec"]
    assert pod["tolerations"] == NON_DEFAULT["tolerations"]
    assert pod["affinity"]["podAntiAffinity"]  # replicas spread over nodes by default
    assert deployment["spec"]["template"]["metadata"]["annotations"] == {"example.com/team": "sre"}
    operator = container(deployment)
    assert operator["image"] == "ghcr.io/lifeboat-dev/lifeboat:0.1.0-rc1"
    assert operator["imagePullPolicy"] == "Always"
    assert operator["args"] == [
        "--log-level=debug",
        "--log-format=json",
        "run",
        "--metrics-port=9090",
        "--health-endpoint=http://0.0.0.0:9091/healthz",
        "--secret-recheck-seconds=30",
        "--lease-seconds=20",
        "--namespace=shop",
        "--namespace=payments",
    ]
    assert operator["resources"] == NON_DEFAULT["resources"]
    assert pod["securityContext"] == {  # null drops the key: the SCC assigns the user
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["volumes"][1:] == NON_DEFAULT["extraVolumes"]
    assert operator["volumeMounts"][1:] == NON_DEFAULT["extraVolumeMounts"]
    for crd in (d for d in documents if d["kind"] == "CustomResourceDefinition"):
        assert crd["metadata"]["annotations"] == {"example.com/owner": "platform"}
    assert [d["metadata"]["name"] for d in documents if d["kind"] == "ClusterRole"] == [
        f"{RELEASE}-lifeboat"
    ]
    pdb = one(documents, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]

    monitor = one(documents, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["endpoints"][0]["interval"] == "15s"
    service = one(documents, "Service")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )

    # Every rules file becomes one PrometheusRule with the file's groups, the alerts
    # settings applied exactly as hack/monitoring.py's alert_groups applies them.
    rules = [d for d in documents if d["kind"] == "PrometheusRule"]
    files = rule_files(chart_with_extras)
    assert len(rules) == len(files)
    by_groups = {json.dumps(r["spec"]["groups"], sort_keys=True) for r in rules}
    for path in files:
        groups = yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
        expected = monitoring.alert_groups(groups, alert_settings(NON_DEFAULT))
        assert json.dumps(expected, sort_keys=True) in by_groups, path.name
    shipped = one(documents, "PrometheusRule", f"{RELEASE}-lifeboat-lifeboat-alerts")
    alerts = {r["alert"]: r for g in shipped["spec"]["groups"] for r in g["rules"]}
    assert "LifeboatPeerUnheard" not in alerts and "LifeboatFailoverStarted" not in alerts
    assert alerts["LifeboatZoneDown"]["labels"] == {"severity": "warning", "team": "sre"}
    assert alerts["LifeboatZoneDown"]["annotations"]["runbook_url"] == (
        "https://wiki.example/lifeboat/runbooks/LifeboatZoneDown.md"
    )
    assert alerts["LifeboatNoRecentDrill"]["expr"].endswith("> 2592000")  # 30 days
    synthetic = one(documents, "PrometheusRule", f"{RELEASE}-lifeboat-synthetic-alerts")
    assert synthetic["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    summary = synthetic["spec"]["groups"][0]["rules"][0]["annotations"]["summary"]
    assert summary == "Zone {{ $labels.zone }} of {{ $labels.namespace }}/{{ $labels.app }} is down"

    # The inhibition rules, as an AlertmanagerConfig.
    inhibit = one(documents, "AlertmanagerConfig")
    assert inhibit["metadata"]["namespace"] == MONITORING_NAMESPACE
    assert inhibit["metadata"]["labels"]["alertmanagerConfig"] == "lifeboat"
    assert inhibit["spec"] == {"inhibitRules": monitoring.alertmanager_config_rules(repo_root())}

    # Every dashboard becomes one labelled ConfigMap holding the JSON, unchanged.
    maps = [d for d in documents if d["kind"] == "ConfigMap"]
    dashboards = dashboard_files(chart_with_extras)
    assert len(maps) == len(dashboards)
    contents = {json.dumps(json.loads(v), sort_keys=True) for m in maps for v in m["data"].values()}
    for path in dashboards:
        assert json.dumps(json.loads(path.read_text("utf-8")), sort_keys=True) in contents
    for config_map in maps:
        assert config_map["metadata"]["namespace"] == MONITORING_NAMESPACE
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "lifeboat"
        assert config_map["metadata"]["annotations"] == {"grafana_folder": "Lifeboat"}
    synthetic_map = one(documents, "ConfigMap", f"{RELEASE}-lifeboat-dashboard-synthetic-overview")
    assert json.loads(synthetic_map["data"]["synthetic-overview.json"]) == SYNTHETIC_DASHBOARD


def test_the_shipped_rules_and_dashboards_are_wrapped(helm: Path, helm_env: dict[str, str]) -> None:
    """Whatever rules/ and dashboards/ hold (maybe nothing yet), each file is wrapped."""
    documents = render(
        helm,
        helm_env,
        "--set",
        "prometheusRule.enabled=true",
        "--set",
        "dashboards.enabled=true",
    )
    assert kinds(documents).count("PrometheusRule") == len(rule_files())
    assert kinds(documents).count("ConfigMap") == len(dashboard_files())
    assert "AlertmanagerConfig" not in kinds(documents)  # opt-in
    for rule in (d for d in documents if d["kind"] == "PrometheusRule"):
        assert rule["spec"]["groups"], rule["metadata"]["name"]
    # By default the shipped groups are rendered as they are (runbook URLs included).
    shipped = one(documents, "PrometheusRule", f"{RELEASE}-lifeboat-lifeboat-alerts")
    path = CHART / "rules" / "lifeboat-alerts.yaml"
    assert shipped["spec"]["groups"] == yaml.safe_load(path.read_text("utf-8"))["groups"]


def alert_settings(values: dict[str, Any]) -> monitoring.AlertSettings:
    """The chart's prometheusRule.alerts values as hack/monitoring.py takes them."""
    alerts = values["prometheusRule"].get("alerts", {})
    return monitoring.AlertSettings(
        enabled=alerts.get("enabled", True),
        disabled=tuple(alerts.get("disabled", ())),
        labels=alerts.get("labels", {}),
        runbook_url_base=alerts.get("runbookUrlBase", monitoring.RUNBOOK_BASE),
        no_recent_drill_days=alerts.get("noRecentDrillDays", monitoring.NO_RECENT_DRILL_DAYS),
    )


def test_alerts_can_be_switched_off_all_at_once_or_by_name(
    helm: Path, helm_env: dict[str, str], tmp_path: Path, chart_with_extras: Path
) -> None:
    off = render(
        helm,
        helm_env,
        "--set",
        "prometheusRule.enabled=true",
        "--set",
        "prometheusRule.alerts.enabled=false",
        chart=chart_with_extras,
    )
    assert "PrometheusRule" not in kinds(off)  # the files hold alerts only: nothing is left
    shipped_groups = yaml.safe_load((CHART / "rules" / "lifeboat-alerts.yaml").read_text("utf-8"))
    group = shipped_groups["groups"][0]
    names = [r["alert"] for r in group["rules"]]
    values = values_file(
        tmp_path, {"prometheusRule": {"enabled": True, "alerts": {"disabled": names}}}
    )
    some = render(helm, helm_env, "-f", str(values), chart=chart_with_extras)
    shipped = one(some, "PrometheusRule", f"{RELEASE}-lifeboat-lifeboat-alerts")
    assert group["name"] not in [g["name"] for g in shipped["spec"]["groups"]]  # left empty
    left = {r["alert"] for g in shipped["spec"]["groups"] for r in g["rules"]}
    assert left and not left & set(names)
    assert one(some, "PrometheusRule", f"{RELEASE}-lifeboat-synthetic-alerts")


def test_no_leader_election_means_one_replica_recreated(
    helm: Path, helm_env: dict[str, str]
) -> None:
    documents = render(helm, helm_env, "--set", "leaderElection.enabled=false")
    deployment = one(documents, "Deployment")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert "--no-leader-election" in container(deployment)["args"]
    refused = run_helm(
        helm,
        helm_env,
        "template",
        RELEASE,
        str(CHART),
        "--set",
        "leaderElection.enabled=false",
        "--set",
        "replicaCount=2",
        check=False,
    )
    assert refused.returncode != 0
    assert "needs leaderElection.enabled" in refused.stderr


def test_a_peer_name_runs_one_replica_as_that_peer(helm: Path, helm_env: dict[str, str]) -> None:
    documents = render(helm, helm_env, "--set", "peers.name=usw2")
    assert "--peer-name=usw2" in container(one(documents, "Deployment"))["args"]
    assert not any(
        a.startswith("--peer-name")
        for a in container(one(render(helm, helm_env), "Deployment"))["args"]
    )
    for setting, complaint in (
        ("replicaCount=2", "set replicaCount to 1"),
        ("leaderElection.enabled=false", "peers.name needs leaderElection.enabled"),
    ):
        refused = run_helm(
            helm, helm_env, "template", RELEASE, str(CHART),
            "--set", "peers.name=usw2", "--set", setting, check=False,
        )  # fmt: skip
        assert refused.returncode != 0 and complaint in refused.stderr


def test_shards_render_a_deployment_per_shard_with_its_own_selector(
    helm: Path, helm_env: dict[str, str]
) -> None:
    documents = render(helm, helm_env, "--set", "shards=3", "--set", "replicaCount=2")
    deployments = [d for d in documents if d["kind"] == "Deployment"]
    assert [d["metadata"]["name"] for d in deployments] == [
        f"{RELEASE}-lifeboat-shard-{i}" for i in range(3)
    ]
    selectors = []
    for i, deployment in enumerate(deployments):
        assert f"--shard={i}/3" in container(deployment)["args"]
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector["lifeboat.dev/shard"] == str(i)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items()
        assert deployment["spec"]["replicas"] == 2
        selectors.append(selector)
    assert len({tuple(sorted(s.items())) for s in selectors}) == 3  # no pod is claimed twice
    (named,) = [r for r in one(documents, "Role")["rules"] if r.get("resourceNames")]
    assert named["resourceNames"] == ["lifeboat"] + [f"lifeboat-shard-{i}-of-3" for i in range(3)]
    single = one(render(helm, helm_env), "Deployment")
    assert not any(a.startswith("--shard") for a in container(single)["args"])
    assert "lifeboat.dev/shard" not in single["spec"]["selector"]["matchLabels"]
    for settings, complaint in (
        (("shards=2", "peers.name=usw2"), "shards > 1 and peers.name do not combine"),
        (("shards=2", "leaderElection.enabled=false"), "shards > 1 needs leaderElection"),
    ):
        args = [a for setting in settings for a in ("--set", setting)]
        refused = run_helm(helm, helm_env, "template", RELEASE, str(CHART), *args, check=False)
        assert refused.returncode != 0 and complaint in refused.stderr


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        pytest.param("replicaCount=0", "/replicaCount", id="no-replicas"),
        pytest.param("shards=65", "/shards", id="too-many-shards"),
        pytest.param("unknownKey=1", "additional properties 'unknownKey'", id="unknown-key"),
        pytest.param("image.pullPolicy=Sometimes", "/image/pullPolicy", id="pull-policy"),
        pytest.param("serviceMonitor.extra=1", "additional properties 'extra'", id="nested-key"),
        pytest.param("metrics.port=70000", "/metrics/port", id="port"),
        pytest.param("peers.name=Not_A_Name", "/peers/name", id="peer-name"),
        pytest.param("logFormat=xml", "/logFormat", id="log-format"),
        pytest.param("watchNamespaces[0]=Not_A_Namespace", "/watchNamespaces/0", id="namespace"),
        pytest.param("peers.name=Not_A_Peer", "/peers/name", id="peer-name"),
        pytest.param("serviceMonitor.interval=soon", "/serviceMonitor/interval", id="interval"),
        pytest.param("resources.limits.memory=lots", "/resources/limits/memory", id="quantity"),
        pytest.param("serviceAccount.annotations.a=null", "/serviceAccount/annotations", id="anno"),
        pytest.param(
            "prometheusRule.alerts.runbookUrlBase=https://wiki.example/runbooks",
            "/prometheusRule/alerts/runbookUrlBase",
            id="runbook-base",
        ),
        pytest.param(
            "prometheusRule.alerts.disabled[0]=Not An Alert",
            "/prometheusRule/alerts/disabled/0",
            id="alert-name",
        ),
        pytest.param(
            "alertmanagerConfig.route=x", "additional properties 'route'", id="amconfig-key"
        ),
    ],
)
def test_the_schema_refuses_bad_values(
    helm: Path, helm_env: dict[str, str], setting: str, complaint: str
) -> None:
    result = run_helm(
        helm, helm_env, "template", RELEASE, str(CHART), "--set", setting, check=False
    )
    assert result.returncode != 0, result.stdout
    assert "don't meet the specifications of the schema" in result.stderr
    assert complaint in result.stderr


# --------------------------------------------------------------------------- drift


def manifest_documents() -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = []
    for directory in ("rbac", "deploy"):
        for path in sorted((manifests_dir() / directory).glob("*.yaml")):
            documents.extend(d for d in yaml.safe_load_all(path.read_text("utf-8")) if d)
    return documents


def test_manifests_agree_with_the_chart_defaults(helm: Path, helm_env: dict[str, str]) -> None:
    """manifests/ (kubectl apply) and the chart (helm install) install the same operator."""
    rendered = render(helm, helm_env, release="lifeboat", namespace="lifeboat-system")
    chart = [d for d in rendered if d["kind"] != "CustomResourceDefinition"]
    plain = manifest_documents()
    assert kinds([d for d in plain if d["kind"] != "Namespace"]) == kinds(chart)
    for document in chart:  # the same names, so the same Lease, Secrets and RBAC
        twin = one(plain, document["kind"], document["metadata"]["name"])
        assert twin["metadata"].get("namespace") == document["metadata"].get("namespace")
        assert twin["metadata"]["labels"].items() <= document["metadata"]["labels"].items()
    for document in (d for d in chart if d["kind"] in ("ClusterRole", "Role")):
        twin = one(plain, document["kind"], document["metadata"]["name"])
        assert document["rules"] == twin["rules"], document["metadata"]["name"]
        aggregation = {k: v for k, v in twin["metadata"]["labels"].items() if "aggregate" in k}
        assert aggregation.items() <= document["metadata"]["labels"].items()
    for kind in ("ClusterRoleBinding", "RoleBinding"):
        for key in ("roleRef", "subjects"):
            assert one(chart, kind)[key] == one(plain, kind)[key], (kind, key)
    deployment, twin = one(chart, "Deployment"), one(plain, "Deployment")
    for key in ("replicas", "strategy", "revisionHistoryLimit"):
        assert deployment["spec"][key] == twin["spec"][key], key
    # The whole pod spec: security contexts, args, env, ports, probes, resources, volumes.
    assert deployment["spec"]["template"]["spec"] == twin["spec"]["template"]["spec"]
    selector = twin["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deployment["spec"]["selector"]["matchLabels"].items()
    service, plain_service = one(chart, "Service"), one(plain, "Service")
    assert service["spec"]["ports"] == plain_service["spec"]["ports"]
    assert service["spec"]["type"] == plain_service["spec"]["type"]
    assert plain_service["spec"]["selector"] == twin["spec"]["template"]["metadata"]["labels"]
    for path in (CHART / "files" / "crds").glob("*.yaml"):
        assert path.read_text("utf-8") == (manifests_dir() / "crds" / path.name).read_text("utf-8")
    for crd in (d for d in rendered if d["kind"] == "CustomResourceDefinition"):
        assert crd["metadata"]["name"] in LIFEBOAT_CRDS


# --------------------------------------------------------------------------- real API server


@pytest.fixture(scope="module")
def cluster(kube: KubeControlPlane, monitoring_crds: list[Path]) -> KubeControlPlane:
    """The session's API server with the monitoring CRDs, Lifeboat's CRDs as kubectl users
    install them (the chart's own CRD handling is tested on a cluster of its own) and the
    namespaces the chart is installed into."""
    kube.install_crds(monitoring_crds)
    kube.install_crds([manifests_dir() / "crds"])
    for namespace in (NAMESPACE, MONITORING_NAMESPACE):
        kube.kubectl("create", "namespace", namespace, check=False)
    return kube


def kube_version(kube: KubeControlPlane) -> str:
    return kube.version.removeprefix("v")


@pytest.mark.parametrize("settings", ["defaults", "non-default"])
def test_rendered_chart_passes_server_side_dry_run(
    helm: Path,
    helm_env: dict[str, str],
    cluster: KubeControlPlane,
    tmp_path: Path,
    chart_with_extras: Path,
    settings: str,
) -> None:
    """The API server accepts every object (the CRDs too) as helm would install them."""
    args = ["--include-crds", "--kube-version", kube_version(cluster)]
    if settings == "non-default":
        args += ["-f", str(values_file(tmp_path, NON_DEFAULT))]
    documents = render(helm, helm_env, *args, chart=chart_with_extras)
    rendered = "---\n".join(yaml.safe_dump(d) for d in documents)
    # The CRDs may already be installed by another manager (kubectl apply -f manifests/ in
    # this session): a second manager of a CRD's atomic .spec.versions always "conflicts",
    # even with equal content. Forcing changes nothing in a dry run; validation still runs.
    result = cluster.kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "--force-conflicts",
        "--field-manager=helm",
        "--filename=-",
        input=rendered,
    )
    applied = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(applied) == len(documents), result.stdout
    assert all(line.endswith("serverside-applied (server dry run)") for line in applied)
    crds = sorted(
        d["metadata"]["name"] for d in documents if d["kind"] == "CustomResourceDefinition"
    )
    assert crds == LIFEBOAT_CRDS and "lifeboatpeers.lifeboat.dev" in crds
    if settings == "non-default":
        for kind in (
            "ServiceMonitor",
            "PrometheusRule",
            "AlertmanagerConfig",
            "PodDisruptionBudget",
            "ConfigMap",
        ):
            assert any(
                line.startswith((f"{kind.lower()}.", f"{kind.lower()}/")) for line in applied
            ), kind


def test_helm_install_and_uninstall_on_the_api_server(
    helm: Path, helm_env: dict[str, str], cluster: KubeControlPlane, tmp_path: Path
) -> None:
    """A real `helm install` (everything switched on, two replicas), RBAC as granted to the
    chart's ServiceAccount, then `helm uninstall` removes it all."""
    release, namespace = "lb-real", "lifeboat-helm"
    kubeconfig = str(cluster.kubeconfig_path)
    values = values_file(
        tmp_path,
        {
            **NON_DEFAULT,
            "dashboards": {**NON_DEFAULT["dashboards"], "namespace": ""},
            "crds": {"install": False},  # installed by kubectl: managed elsewhere
        },
    )
    installed = run_helm(
        helm,
        helm_env,
        "install",
        release,
        str(CHART),
        "--kubeconfig",
        kubeconfig,
        "-n",
        namespace,
        "--create-namespace",
        "-f",
        str(values),
    )
    try:
        assert "STATUS: deployed" in installed.stdout
        notes = installed.stdout.split("NOTES:", 1)[1]
        assert "<no value>" not in notes
        assert "kubectl lifeboat status -A" in notes
        assert "2 replicas run" in notes
        assert "shop, payments" in notes
        listing = cluster.kubectl("get", "deploy,sa,svc,pdb,servicemonitor", "-n", namespace)
        for name in (
            f"deployment.apps/{release}-lifeboat",
            f"serviceaccount/{release}-lifeboat",
            f"service/{release}-lifeboat-metrics",
            f"poddisruptionbudget.policy/{release}-lifeboat",
            f"servicemonitor.monitoring.coreos.com/{release}-lifeboat",
        ):
            assert name.split("/", 1)[1] in listing.stdout, name

        account = f"system:serviceaccount:{namespace}:{release}-lifeboat"

        def can(verb: str, resource: str, where: str | None = None, sub: str = "") -> bool:
            args = ["auth", "can-i", verb, resource, f"--as={account}"]
            args += ["-n", where] if where else []
            args += [f"--subresource={sub}"] if sub else []
            return cluster.kubectl(*args, check=False).stdout.strip() == "yes"

        assert can("watch", "resilientapps.lifeboat.dev")
        assert can("patch", "resilientapps.lifeboat.dev", "shop", sub="status")
        assert can("patch", "deployments.apps", "shop", sub="scale")
        assert not can("get", "deployments.apps", "shop", sub="scale")
        assert can("get", "secrets", namespace)
        assert can("update", "leases.coordination.k8s.io/lifeboat", namespace)
        assert not can("update", "leases.coordination.k8s.io/other", namespace)
        assert not can("get", "secrets", "shop")
        assert not can("patch", "deployments.apps", "shop")
        assert not can("delete", "resilientapps.lifeboat.dev", "shop")
        assert can("watch", "failoverdrills.lifeboat.dev")
        assert can("patch", "failoverdrills.lifeboat.dev", "shop", sub="status")
        assert not can("create", "failoverdrills.lifeboat.dev", "shop")
    finally:
        run_helm(helm, helm_env, "uninstall", release, "--kubeconfig", kubeconfig, "-n", namespace)
    remaining = cluster.kubectl(
        "get", "deploy,sa,svc,role,rolebinding", "-n", namespace, "-o", "name"
    ).stdout.split()
    assert not [name for name in remaining if release in name]
    cluster_wide = cluster.kubectl("get", "clusterrole,clusterrolebinding", "-o", "name").stdout
    assert f"{release}-lifeboat" not in cluster_wide


# --------------------------------------------------------------------------- CRD lifecycle


def adopt_crds(kube: KubeControlPlane, release: str, namespace: str) -> None:
    """docs/install.md's upgrade step for CRDs installed by kubectl or by the chart's former
    crds/ folder: mark them as the release's, so helm takes them over."""
    for name in LIFEBOAT_CRDS:
        kube.kubectl("label", "--overwrite", "crd", name, "app.kubernetes.io/managed-by=Helm")
        kube.kubectl(
            "annotate",
            "--overwrite",
            "crd",
            name,
            f"meta.helm.sh/release-name={release}",
            f"meta.helm.sh/release-namespace={namespace}",
        )


def test_helm_upgrades_the_crds_and_uninstall_keeps_them_and_the_apps(
    helm: Path, helm_env: dict[str, str], kube_assets: Assets, tmp_path: Path
) -> None:
    """On an API server of its own: CRDs first applied by kubectl (an older install) are
    adopted as docs/install.md says, `helm upgrade` carries a CRD change to the server, and
    `helm uninstall` leaves the CRDs and the ResilientApps they hold."""
    release, namespace = "lb-crds", "lifeboat-crds"
    with KubeControlPlane(kube_assets) as kube:
        kubeconfig = str(kube.kubeconfig_path)
        kube.install_crds([manifests_dir() / "crds"])
        refused = run_helm(
            helm, helm_env, "install", release, str(CHART), "--kubeconfig", kubeconfig,
            "-n", namespace, "--create-namespace", check=False,
        )  # fmt: skip
        assert refused.returncode != 0
        assert "invalid ownership metadata" in refused.stderr
        adopt_crds(kube, release, namespace)
        run_helm(
            helm, helm_env, "install", release, str(CHART), "--kubeconfig", kubeconfig,
            "-n", namespace, "--create-namespace",
        )  # fmt: skip
        example = manifests_dir() / "examples" / "aws" / "resilientapp.yaml"
        kube.kubectl("apply", "-f", str(example))
        app_namespace = yaml.safe_load(example.read_text("utf-8"))["metadata"]["namespace"]

        # A new chart version whose ResilientApp CRD gained a printer column.
        upgraded = tmp_path / "lifeboat"
        shutil.copytree(CHART, upgraded)
        crd_file = upgraded / "files" / "crds" / "lifeboat.dev_resilientapps.yaml"
        crd = yaml.safe_load(crd_file.read_text("utf-8"))
        version = crd["spec"]["versions"][0]
        version.setdefault("additionalPrinterColumns", []).append(
            {"name": "Upgraded", "type": "string", "jsonPath": ".metadata.name"}
        )
        crd_file.write_text(yaml.safe_dump(crd), encoding="utf-8")
        run_helm(
            helm, helm_env, "upgrade", release, str(upgraded), "--kubeconfig", kubeconfig,
            "-n", namespace,
        )  # fmt: skip
        served = json.loads(
            kube.kubectl("get", "crd", "resilientapps.lifeboat.dev", "-o", "json").stdout
        )
        columns = served["spec"]["versions"][0]["additionalPrinterColumns"]
        assert "Upgraded" in [c["name"] for c in columns]

        run_helm(helm, helm_env, "uninstall", release, "--kubeconfig", kubeconfig, "-n", namespace)
        kept = kube.kubectl("get", "crd", "-o", "name").stdout.split()
        assert (
            sorted(n.removeprefix("customresourcedefinition.apiextensions.k8s.io/") for n in kept)
            == LIFEBOAT_CRDS
        )
        apps = kube.kubectl(
            "get", "resilientapps", "-n", app_namespace, "-o", "name"
        ).stdout.split()
        assert len(apps) == 1
        deployments = kube.kubectl("get", "deploy", "-n", namespace, "-o", "name").stdout
        assert release not in deployments
