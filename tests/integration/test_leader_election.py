"""Two operators, one Lease: only the leader acts, and the standby takes over."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack

import kubernetes.client
import pytest
from kubernetes.client.exceptions import ApiException

from controller.operator.runner import OperatorConfig, in_background
from controller.providers.kubernetes.capacity import client_from_kubeconfig
from sandbox.procs import free_loopback_port
from sandbox.world import CONTROLLER_NAMESPACE, Sandbox
from tests.fixtures.world import Apps, wait_for

pytestmark = pytest.mark.integration


def test_only_the_lease_holder_acts_and_the_standby_takes_over(
    sandbox: Sandbox, app_harness: Apps
) -> None:
    config = sandbox.operator_config()
    with ExitStack() as second:
        with ExitStack() as first:
            first.enter_context(in_background(config))
            standby = second.enter_context(in_background(config, wait_ready=False))
            namespace, name = app_harness.create()
            app_harness.wait_serving(namespace, name)
            for endpoint in sandbox.zones.site_endpoints("use1"):
                endpoint.down()
            wait_for(
                lambda: app_harness.status(namespace, name).get("traffic", {}).get("epoch") == 2,
                30,
                "the failover to be applied",
            )
            assert not standby.is_set()  # the standby never ran a handler
            events = app_harness.events(namespace, name)
            assert [r for _, r, _ in events].count("FailoverStarted") == 1
            assert [r for _, r, _ in events].count("TrafficShifted") == 2  # epoch 1, epoch 2
        # The leader stopped and released the Lease: the standby takes over at once.
        wait_for(standby.is_set, 15, "the standby to take over")
        for endpoint in sandbox.zones.site_endpoints("use1"):
            endpoint.serve()
        wait_for(
            lambda: app_harness.status(namespace, name).get("healthyZones") == "6/6",
            30,
            "the new leader to probe the app",
        )
        app_harness.delete_all()


def _health(port: int) -> str | None:
    """The body of a 200 answer from the liveness endpoint on ``port``; None otherwise."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            return str(answer.read().decode()) if answer.status == 200 else None
    except OSError:
        return None


def test_a_standby_answers_its_liveness_probe_then_serves_kopfs(sandbox: Sandbox) -> None:
    """A replica waiting for the Lease is alive (a Deployment's liveness probe must not
    restart it); once it leads, the endpoint is kopf's own."""
    leader_port, standby_port = free_loopback_port(), free_loopback_port()

    def config(port: int) -> OperatorConfig:
        return sandbox.operator_config(liveness_endpoint=f"http://127.0.0.1:{port}/healthz")

    with ExitStack() as second:
        with ExitStack() as first:
            first.enter_context(in_background(config(leader_port)))
            standby = second.enter_context(in_background(config(standby_port), wait_ready=False))
            wait_for(lambda: _health(leader_port), 20, "the leader's liveness")
            body = wait_for(lambda: _health(standby_port), 20, "the standby's liveness")
            assert json.loads(body) == {"leader": False}
            assert not standby.is_set()
        wait_for(standby.is_set, 15, "the standby to take over")

        def kopf_health() -> str | None:
            answer = _health(standby_port)
            return answer if answer is not None and "leader" not in answer else None

        body = wait_for(kopf_health, 20, "kopf's liveness endpoint on the new leader")
        assert isinstance(json.loads(body), dict)


def test_lease_requests_go_to_the_leader_election_priority_level(sandbox: Sandbox) -> None:
    """The API server classifies the operator's Lease requests under Lifeboat's FlowSchema
    (manifests/rbac/flowschema.yaml), in the leader-election priority level: a burst of the
    operator's own status writes and Events cannot queue a renewal past its deadline (a
    1,000-app start-up lost its Leases to 429s without it). Its other requests are not."""
    flowschemas = kubernetes.client.FlowcontrolApiserverV1Api(sandbox.kube.api_client())
    ours = flowschemas.read_flow_schema("lifeboat-leader-election")
    assert ours.spec.priority_level_configuration.name == "leader-election"
    assert ours.metadata is not None
    uid = ours.metadata.uid
    operator = client_from_kubeconfig(sandbox.operator_kubeconfig.read_text())

    def flow_schema_of(call: Callable[[], object]) -> str:
        try:
            answer = call()
            # (data, status, headers) from the client's legacy options, or an ApiResponse
            headers = answer[2] if isinstance(answer, tuple) else getattr(answer, "headers", None)
        except ApiException as error:  # a 404 carries the classification all the same
            headers = error.headers
        headers = headers or {}
        return str(
            {k.lower(): v for k, v in dict(headers).items()}["x-kubernetes-pf-flowschema-uid"]
        )

    leases = kubernetes.client.CoordinationV1Api(operator)
    lease = flow_schema_of(
        lambda: leases.read_namespaced_lease_with_http_info("lifeboat", CONTROLLER_NAMESPACE)
    )
    assert lease == uid
    secrets = kubernetes.client.CoreV1Api(operator)
    other = flow_schema_of(
        lambda: secrets.read_namespaced_secret_with_http_info("none", CONTROLLER_NAMESPACE)
    )
    assert other != uid
