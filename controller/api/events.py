"""The reasons of the Events Lifeboat posts, every one of them.

An Event's reason is part of the API: alerts, runbooks and ``kubectl get events
--field-selector reason=...`` match on it, so the words are written once, here, and kept
stable. Several also serve as condition reasons (a ``ConfigurationValid`` or ``Ready``
condition names the same cause its warning Event does). CamelCase, as Kubernetes wants.
"""

from __future__ import annotations

from enum import StrEnum


class EventReason(StrEnum):
    # --------------------------------------------------------------- decisions (the core's notes)
    ZONE_STATE_CHANGED = "ZoneStateChanged"
    FAILOVER_STARTED = "FailoverStarted"
    FAILBACK_STARTED = "FailbackStarted"
    ZONE_EVACUATED = "ZoneEvacuated"
    EVACUATION_HELD = "EvacuationHeld"
    ZONE_RESTORED = "ZoneRestored"
    ACTION_RECOMMENDED = "ActionRecommended"
    NO_FAILOVER_TARGET = "NoFailoverTarget"
    FAILOVER_HELD = "FailoverHeld"
    REGION_FROZEN = "RegionFrozen"
    REGION_UNFROZEN = "RegionUnfrozen"
    ACTIVE_SITE_RESET = "ActiveSiteReset"
    REQUEST_ACCEPTED = "RequestAccepted"
    REQUEST_REFUSED = "RequestRefused"
    DNS_DIVERGED = "DNSDiverged"
    DNS_OWNERSHIP_CONFLICT = "DNSOwnershipConflict"
    DNS_OWNERSHIP_RESOLVED = "DNSOwnershipResolved"
    DNS_FENCED = "DNSFenced"
    DNS_UNREADABLE = "DNSUnreadable"
    STATUS_UNREADABLE = "StatusUnreadable"
    PLANNED_SWITCHOVER_STARTED = "PlannedSwitchoverStarted"
    REPLICATION_DRAINED = "ReplicationDrained"
    PLANNED_SWITCHOVER_ABORTED = "PlannedSwitchoverAborted"
    PLANNED_SWITCHOVER_DONE = "PlannedSwitchoverDone"

    # --------------------------------------------------------------- actions carried out
    TRAFFIC_SHIFTED = "TrafficShifted"
    CAPACITY_SET = "CapacitySet"
    CAPACITY_READY = "CapacityReady"
    CAPACITY_NOT_READY = "CapacityNotReady"
    STANDBY_READY = "StandbyReady"
    STANDBY_NOT_READY = "StandbyNotReady"
    VOLUMES_RESTORED = "VolumesRestored"
    WRITES_STOPPED = "WritesStopped"
    WRITES_RESUMED = "WritesResumed"

    # --------------------------------------------------------------- actions that failed
    SHIFT_TRAFFIC_FAILED = "ShiftTrafficFailed"
    SET_CAPACITY_FAILED = "SetCapacityFailed"
    RESTORE_VOLUMES_FAILED = "RestoreVolumesFailed"
    FENCE_WRITES_FAILED = "FenceWritesFailed"
    TRAFFIC_SHIFT_NOT_IN_SYNC = "TrafficShiftNotInSync"
    CAPACITY_UNAVAILABLE = "CapacityUnavailable"
    VOLUMES_UNAVAILABLE = "VolumesUnavailable"
    VOLUME_COPY_PENDING = "VolumeCopyPending"
    HOSTED_ZONE_NOT_FOUND = "HostedZoneNotFound"
    REGION_IMPAIRED = "RegionImpaired"

    # --------------------------------------------------------------- the app's configuration
    INVALID_SPEC = "InvalidSpec"
    SITES_WITHOUT_ENDPOINTS = "SitesWithoutEndpoints"
    CA_BUNDLE_UNAVAILABLE = "CABundleUnavailable"
    PROVIDER_NOT_FOUND = "ProviderNotFound"
    INVALID_PROVIDER = "InvalidProvider"
    REGION_NOT_OFFERED = "RegionNotOffered"
    OBJECTS_UNSUPPORTED = "ObjectsUnsupported"
    EVENTS_UNSUPPORTED = "EventsUnsupported"
    VOLUMES_UNSUPPORTED = "VolumesUnsupported"
    CAPACITY_UNSUPPORTED = "CapacityUnsupported"
    TRAFFIC_UNSUPPORTED = "TrafficUnsupported"
    SECRET_NOT_FOUND = "SecretNotFound"  # noqa: S105 (a reason, not a secret)
    SECRET_UNREADABLE = "SecretUnreadable"  # noqa: S105 (a reason, not a secret)
    SECRET_KEY_MISSING = "SecretKeyMissing"  # noqa: S105 (a reason, not a secret)
    KUBECONFIG_INVALID = "KubeconfigInvalid"
    CREDENTIALS_INCOMPLETE = "CredentialsIncomplete"
    PROVIDER_NOT_PERMITTED = "ProviderNotPermitted"
    NAMESPACE_NOT_PERMITTED = "NamespaceNotPermitted"
    CLUSTER_NOT_FOUND = "ClusterNotFound"

    # --------------------------------------------------------------- peers (several vantages)
    VANTAGE_DISAGREEMENT = "VantageDisagreement"
    VANTAGE_AGREED = "VantageAgreed"
    PEERS_UNHEARD = "PeersUnheard"
    PEER_SPEC_DRIFT = "PeerSpecDrift"
    PEER_SPECS_AGREE = "PeerSpecsAgree"

    # --------------------------------------------------------------- replication
    RPO_BREACHED = "RPOBreached"
    RPO_RECOVERED = "RPORecovered"
    REPLICATION_CONFLICT = "ReplicationConflict"
    REPLICATION_STOPPED = "ReplicationStopped"
    UNREPLICATED_OBJECTS = "UnreplicatedObjects"
    UNREPLICATED_RESOLVED = "UnreplicatedResolved"
    VOLUME_SNAPSHOT_FAILED = "VolumeSnapshotFailed"
    VOLUME_COPY_FAILED = "VolumeCopyFailed"
    VOLUME_PRUNE_FAILED = "VolumePruneFailed"
    RESTORED_VOLUME_FAILED = "RestoredVolumeFailed"

    # --------------------------------------------------------------- CloudProviders
    CREDENTIALS_VERIFIED = "CredentialsVerified"
    VERIFICATION_FAILED = "VerificationFailed"
    API_PLANE_DEGRADED = "ApiPlaneDegraded"
    API_PLANE_IMPAIRED = "ApiPlaneImpaired"
    API_PLANE_RECOVERED = "ApiPlaneRecovered"

    # --------------------------------------------------------------- FailoverDrills
    DRILL_STARTED = "DrillStarted"
    DRILL_REFUSED = "DrillRefused"
    DRILL_SWITCHED = "DrillSwitched"
    DRILL_ZONE_EVACUATED = "DrillZoneEvacuated"
    DRILL_ZONE_RESTORED = "DrillZoneRestored"
    DRILL_ABORTING = "DrillAborting"
    DRILL_SUCCEEDED = "DrillSucceeded"
    DRILL_ABORTED = "DrillAborted"
    DRILL_FAILED = "DrillFailed"

    # --------------------------------------------------------------- peers
    NO_MAJORITY = "NoMajority"
    """An action held: its decision's status reached no majority of the peer clusters."""


_ACTION_FAILED = {
    "ShiftTraffic": EventReason.SHIFT_TRAFFIC_FAILED,
    "SetCapacity": EventReason.SET_CAPACITY_FAILED,
    "RestoreVolumes": EventReason.RESTORE_VOLUMES_FAILED,
    "FenceWrites": EventReason.FENCE_WRITES_FAILED,
}


def action_failed(kind: str) -> EventReason:
    """The reason of the Event that says an action of ``kind`` (ShiftTraffic, SetCapacity,
    RestoreVolumes, FenceWrites) failed."""
    return _ACTION_FAILED[kind]
