"""The API's words: written once in controller/api, and never changed by accident.

Users, alerts and runbooks match on annotation keys, condition types and Event reasons, so
these tests spell the wire form out literally: renaming a constant is fine, changing what
it says on the wire fails here.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from controller.api import names
from controller.api.annotations import (
    APPROVE,
    KOPF_PREFIX,
    PIN,
    REQUEST,
    UNREPLICATED,
    ManualOperations,
    Request,
    RequestOp,
)
from controller.api.conditions import ConditionType
from controller.api.events import EventReason, action_failed
from controller.api.models import Condition
from controller.core import model as m


def test_group_version_and_names() -> None:
    assert (names.GROUP, names.VERSION, names.API_VERSION) == (
        "lifeboat.dev",
        "v1alpha1",
        "lifeboat.dev/v1alpha1",
    )
    assert names.RESILIENT_APP.crd_name == "resilientapps.lifeboat.dev"
    assert names.CLOUD_PROVIDER.crd_name == "cloudproviders.lifeboat.dev"
    assert names.FAILOVER_DRILL.crd_name == "failoverdrills.lifeboat.dev"
    assert names.FINALIZER == "lifeboat.dev/finalizer"
    assert names.REPORTING_COMPONENT == "lifeboat.dev/operator"


def test_annotation_keys() -> None:
    assert (REQUEST, APPROVE, PIN, UNREPLICATED) == (
        "lifeboat.dev/request",
        "lifeboat.dev/approve",
        "lifeboat.dev/pin",
        "lifeboat.dev/unreplicated",
    )
    assert KOPF_PREFIX == "lifeboat.dev"
    assert (names.DRILL_ANNOTATION, names.ABORT_ANNOTATION) == (
        "lifeboat.dev/drill",
        "lifeboat.dev/abort",
    )


def test_condition_types() -> None:
    assert {t.value for t in ConditionType} == {
        "Ready",
        "Degraded",
        "FailingOver",
        "ConfigurationValid",
        "Replicating",
        "RPOBreached",
        "ApiPlaneHealthy",
        "DNSInSync",
        "Complete",
        "VantageAgreement",
        "PeerSpecDrift",
        "StandbyReady",
        "CapacityReady",
        "Running",
        "Succeeded",
    }


def test_event_reasons() -> None:
    assert {r.value for r in EventReason} == {
        # decisions
        "ZoneStateChanged",
        "FailoverStarted",
        "FailbackStarted",
        "ZoneEvacuated",
        "EvacuationHeld",
        "ZoneRestored",
        "ActionRecommended",
        "NoFailoverTarget",
        "FailoverHeld",
        "RegionFrozen",
        "RegionUnfrozen",
        "ActiveSiteReset",
        "RequestAccepted",
        "RequestRefused",
        "DNSDiverged",
        "DNSOwnershipConflict",
        "DNSOwnershipResolved",
        "DNSFenced",
        "DNSUnreadable",
        "StatusUnreadable",
        "PlannedSwitchoverStarted",
        "ReplicationDrained",
        "PlannedSwitchoverAborted",
        "PlannedSwitchoverDone",
        # actions
        "TrafficShifted",
        "CapacitySet",
        "CapacityReady",
        "CapacityNotReady",
        "StandbyReady",
        "StandbyNotReady",
        "VolumesRestored",
        "WritesStopped",
        "WritesResumed",
        "ShiftTrafficFailed",
        "SetCapacityFailed",
        "RestoreVolumesFailed",
        "FenceWritesFailed",
        "TrafficShiftNotInSync",
        "CapacityUnavailable",
        "VolumesUnavailable",
        "VolumeCopyPending",
        "HostedZoneNotFound",
        "RegionImpaired",
        # configuration
        "InvalidSpec",
        "SitesWithoutEndpoints",
        "CABundleUnavailable",
        "ProviderNotFound",
        "InvalidProvider",
        "RegionNotOffered",
        "ObjectsUnsupported",
        "EventsUnsupported",
        "VolumesUnsupported",
        "CapacityUnsupported",
        "TrafficUnsupported",
        "SecretNotFound",
        "SecretUnreadable",
        "SecretKeyMissing",
        "KubeconfigInvalid",
        "CredentialsIncomplete",
        "ProviderNotPermitted",
        "NamespaceNotPermitted",
        "ClusterNotFound",
        # peers
        "VantageDisagreement",
        "VantageAgreed",
        "PeersUnheard",
        "PeerSpecDrift",
        "PeerSpecsAgree",
        # replication
        "RPOBreached",
        "RPORecovered",
        "ReplicationConflict",
        "ReplicationStopped",
        "UnreplicatedObjects",
        "UnreplicatedResolved",
        "VolumeSnapshotFailed",
        "VolumeCopyFailed",
        "VolumePruneFailed",
        "RestoredVolumeFailed",
        # CloudProviders
        "CredentialsVerified",
        "VerificationFailed",
        "ApiPlaneDegraded",
        "ApiPlaneImpaired",
        "ApiPlaneRecovered",
        # FailoverDrills
        "DrillStarted",
        "DrillRefused",
        "DrillSwitched",
        "DrillZoneEvacuated",
        "DrillZoneRestored",
        "DrillAborting",
        "DrillSucceeded",
        "DrillAborted",
        "DrillFailed",
        # peers
        "NoMajority",
    }


def test_every_event_reason_is_a_valid_condition_reason() -> None:
    """Several reasons serve conditions too, so all must pass the Condition's pattern."""
    for reason in EventReason:
        condition = Condition(
            type=ConditionType.READY,
            status="False",
            reason=reason,
            last_transition_time="2026-01-01T00:00:00Z",
        )
        assert condition.to_wire()["reason"] == reason.value


def test_the_cores_notes_are_event_reasons() -> None:
    assert {k.value for k in m.NoteKind} <= {r.value for r in EventReason}
    assert str(m.NoteKind.FAILOVER) == "FailoverStarted"
    assert str(m.NoteKind.HELD) == "FailoverHeld"


@pytest.mark.parametrize("action", [m.ShiftTraffic, m.SetCapacity, m.RestoreVolumes, m.FenceWrites])
def test_every_action_kind_has_a_failure_reason(action: type[m.Action]) -> None:
    assert action_failed(action.kind) == f"{action.kind}Failed"


# --------------------------------------------------------------------------- annotations


def test_a_request_reads_what_the_cli_writes() -> None:
    request = Request("abc", RequestOp.FAILOVER, "usw2", force=True)
    raw = request.serialise()
    assert raw == '{"id": "abc", "op": "failover", "force": true, "site": "usw2"}'
    assert Request.parse(raw) == request
    failback = Request("def", RequestOp.FAILBACK)
    assert failback.serialise() == '{"id": "def", "op": "failback", "force": false}'
    assert Request.parse(failback.serialise()) == failback
    drill = Request("d", RequestOp.FAILOVER, "usw2", planned=True, drill=True)
    assert drill.serialise() == (
        '{"id": "d", "op": "failover", "force": false, "site": "usw2", "planned": true, '
        '"drill": true}'
    )


def test_a_request_written_by_hand_is_read_leniently() -> None:
    assert Request.parse(json.dumps({"id": 7, "op": "failback"})) == Request(
        "7", RequestOp.FAILBACK
    )


@pytest.mark.parametrize(
    "raw", ["not json", "[]", '{"op": "failover"}', '{"id": "x", "op": "explode"}', "null"]
)
def test_an_unreadable_request_is_refused(raw: str) -> None:
    with pytest.raises(ValueError, match=r"unreadable lifeboat\.dev/request"):
        Request.parse(raw)


def test_manual_operations_from_annotations() -> None:
    asked = ManualOperations.from_annotations(
        {
            "lifeboat.dev/request": '{"id": "r1", "op": "failover", "site": "usw2"}',
            "lifeboat.dev/approve": "region-failover/epoch-2/abcd",
            "lifeboat.dev/pin": "use1",
            "other.example/key": "ignored",
        }
    )
    assert asked == ManualOperations(
        request=Request("r1", RequestOp.FAILOVER, "usw2"),
        approval="region-failover/epoch-2/abcd",
        pin="use1",
    )
    assert ManualOperations.from_annotations(None) == ManualOperations()
    assert ManualOperations.from_annotations({"lifeboat.dev/pin": ""}) == ManualOperations()


def test_an_unreadable_request_annotation_is_named_not_fatal() -> None:
    asked = ManualOperations.from_annotations(
        {"lifeboat.dev/request": "{oops", "lifeboat.dev/pin": "use1"}
    )
    assert asked.request is None
    assert asked.pin == "use1"
    assert asked.unreadable == ("lifeboat.dev/request",)


def test_the_merge_patch_names_only_what_changed() -> None:
    before = ManualOperations(approval="old", pin="use1")
    assert ManualOperations(approval="old", pin="usw2").merge_patch(before) == {
        "lifeboat.dev/pin": "usw2"
    }
    assert ManualOperations(approval="old").merge_patch(before) == {"lifeboat.dev/pin": None}
    assert before.merge_patch(before) == {}
    request = Request("r2", RequestOp.FAILBACK)
    assert ManualOperations(request=request).merge_patch() == {
        "lifeboat.dev/request": request.serialise()
    }


def test_a_merge_patch_round_trips() -> None:
    before = ManualOperations(pin="use1")
    after = ManualOperations(request=Request("r3", RequestOp.FAILOVER, "usw2"), approval="a")
    stored = {"lifeboat.dev/pin": "use1"}
    for key, value in after.merge_patch(before).items():
        if value is None:
            stored.pop(key, None)
        else:
            stored[key] = value
    assert ManualOperations.from_annotations(stored) == after


def test_the_cli_status_path_imports_no_cloud_sdk() -> None:
    code = (
        "import sys, controller.cli.commands; "
        "print(sorted(m for m in ('boto3', 'botocore', 'openstack', 'pydantic', "
        "'controller.operator.app', 'controller.api.models') if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    assert "boto3" not in loaded and "openstack" not in loaded, loaded
    assert "controller.operator.app" not in loaded and "controller.api.models" not in loaded
