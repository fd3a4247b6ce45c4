"""An EC2 Auto Scaling group as a :class:`~controller.providers.protocols.CapacityDriver`.

An Auto Scaling group is asked for a total (``DesiredCapacity``) and balances it over the
zones it may use: its VPC subnets (``VPCZoneIdentifier``; each subnet lives in one zone)
or, for groups without subnets, its ``AvailabilityZones``. So :meth:`set_zones` enables
exactly the zones with a positive count and asks for the sum; when a zone is taken away
the group terminates its instances there and launches replacements in the others
(zonal evacuation). The per-zone ``desired`` that :meth:`observe` reports is that even
balance (the remainder going to the first zones by name), not a promise of placement.

Bounds: ``MaxSize`` is raised when the total needs it, never lowered. ``MinSize`` is the
group owner's floor and is never changed: a total below it is asked for as ``MinSize``
(so Lifeboat never scales a group below what its owner said it must keep).

``observe`` also reads the group's latest scaling activities (DescribeScalingActivities,
one page of :data:`ACTIVITIES_READ`): those that failed within :data:`FAILURE_WINDOW`
seconds are reported (``CapacityState.failures``), and each one that failed for capacity
(``InsufficientInstanceCapacity``, ``InstanceLimitExceeded``, ``VcpuLimitExceeded``, ...:
the 2012 us-east-1 symptom) is counted once, when first seen, against the region's API
plane (a launch that failed for a bad launch template or a missing image says nothing about
the API plane and is only reported). Ready means ``InService`` and ``Healthy``: the group's
own health, which takes in EC2 status checks and, for a group whose health check type is
``ELB``, its target groups' health checks.

Subnets: ``subnets`` is every subnet the group may use, in every zone it may ever be
given. Without it, the group's subnets when this driver first sees the group are taken,
which cannot bring back a zone that was already taken away before (after a restart, say):
give ``subnets`` explicitly in production.
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from controller.core.apiplane import CallOutcome
from controller.providers.aws.connector import AwsConnector
from controller.providers.outcomes import AWS_CAPACITY_CODES, Classified
from controller.providers.protocols import CapacityState, ZoneCapacity

if TYPE_CHECKING:
    from mypy_boto3_autoscaling import AutoScalingClient
    from mypy_boto3_autoscaling.type_defs import (
        ActivityTypeDef,
        AutoScalingGroupTypeDef,
        UpdateAutoScalingGroupTypeTypeDef,
    )
    from mypy_boto3_ec2 import EC2Client


ACTIVITIES_READ = 20
"""Scaling activities read per observation (the newest first)."""
FAILURE_WINDOW = 3600.0
"""Seconds a failed scaling activity is reported for."""
FAILURES_REPORTED = 3
_CAPACITY_WORDS = ("insufficient capacity", "instance limit", "vcpu limit")


class AutoScalingGroupNotFound(LookupError):
    """The Auto Scaling group does not exist in the region."""


async def describe_group(
    connector: AwsConnector, region: str, group_name: str
) -> AutoScalingGroupTypeDef:
    """The group as DescribeAutoScalingGroups reports it (instances included)."""
    client: AutoScalingClient = connector.client("autoscaling", region)
    answer = await connector.call(
        region,
        "autoscaling",
        "DescribeAutoScalingGroups",
        functools.partial(client.describe_auto_scaling_groups, AutoScalingGroupNames=[group_name]),
        mutating=False,
    )
    groups = answer["AutoScalingGroups"]
    if not groups:
        raise AutoScalingGroupNotFound(f"no Auto Scaling group {group_name!r} in {region}")
    return groups[0]


def group_subnets(group: AutoScalingGroupTypeDef) -> list[str]:
    """The group's subnets, in its own order."""
    return [s.strip() for s in group.get("VPCZoneIdentifier", "").split(",") if s.strip()]


def spread(total: int, zones: Sequence[str]) -> dict[str, int]:
    """``total`` balanced over ``zones`` (sorted by name; the remainder to the first)."""
    if not zones:
        return {}
    base, extra = divmod(total, len(zones))
    return {zone: base + (1 if i < extra else 0) for i, zone in enumerate(sorted(zones))}


class AutoScalingGroupCapacity:
    """One Auto Scaling group in one region."""

    def __init__(
        self,
        connector: AwsConnector,
        region: str,
        group_name: str,
        subnets: Sequence[str] | None = None,
    ) -> None:
        self.connector = connector
        self.region = region
        self.group_name = group_name
        self._subnets: tuple[str, ...] | None = tuple(subnets) if subnets is not None else None
        self._subnet_zones: dict[str, str] = {}
        self._counted: set[str] = set()
        """Failed activities already counted against the API plane (by ActivityId)."""

    def __repr__(self) -> str:
        return f"AutoScalingGroupCapacity({self.region}/{self.group_name})"

    async def _group(self) -> AutoScalingGroupTypeDef:
        group = await describe_group(self.connector, self.region, self.group_name)
        if self._subnets is None:
            self._subnets = tuple(group_subnets(group))
        return group

    async def observe(self) -> CapacityState:
        group = await self._group()
        enabled = group["AvailabilityZones"]
        desired = spread(group["DesiredCapacity"], enabled)
        running = Counter(
            instance["AvailabilityZone"]
            for instance in group.get("Instances", [])
            if instance["LifecycleState"] == "InService" and instance["HealthStatus"] == "Healthy"
        )
        zones = sorted(set(enabled) | set(running))
        return CapacityState(
            tuple(ZoneCapacity(z, desired.get(z, 0), running.get(z, 0)) for z in zones),
            minimum=group["MinSize"],
            maximum=group["MaxSize"],
            failures=await self._failures(),
            max_size=group["MaxSize"],
            unit="instances InService",
        )

    async def _failures(self) -> tuple[str, ...]:
        """The group's scaling activities that failed lately, newest first; each one that
        failed for capacity counted once against the region's API plane."""
        client: AutoScalingClient = self.connector.client("autoscaling", self.region)
        answer = await self.connector.call(
            self.region,
            "autoscaling",
            "DescribeScalingActivities",
            functools.partial(
                client.describe_scaling_activities,
                AutoScalingGroupName=self.group_name,
                MaxRecords=ACTIVITIES_READ,
            ),
            mutating=False,
        )
        now = time.time()
        failed: list[str] = []
        for activity in answer.get("Activities", []):
            if activity.get("StatusCode") != "Failed" or _age(activity, now) > FAILURE_WINDOW:
                continue
            words = _activity_words(activity)
            failed.append(words)
            code = _capacity_code(words)
            key = str(activity.get("ActivityId", words))
            if code is not None and key not in self._counted:
                self._counted.add(key)
                self.connector.calls.evidence(
                    self.region,
                    "autoscaling",
                    "ScalingActivity",
                    Classified(CallOutcome.CAPACITY_ERROR, code),
                )
        return tuple(failed[:FAILURES_REPORTED])

    async def set_zones(self, desired: Mapping[str, int]) -> None:
        if any(count < 0 for count in desired.values()):
            raise ValueError(f"negative capacity asked for: {dict(desired)}")
        wanted = sorted(zone for zone, count in desired.items() if count > 0)
        group = await self._group()
        update: UpdateAutoScalingGroupTypeTypeDef = {"AutoScalingGroupName": self.group_name}
        if wanted and group_subnets(group):
            subnets = await self._subnets_in(wanted)
            if set(subnets) != set(group_subnets(group)):
                update["VPCZoneIdentifier"] = ",".join(subnets)
        elif wanted and set(wanted) != set(group["AvailabilityZones"]):
            update["AvailabilityZones"] = wanted
        # No zone wanted: the group keeps its zones (it cannot have none) and its floor.
        total = max(sum(desired[zone] for zone in wanted), group["MinSize"])
        if total != group["DesiredCapacity"]:
            update["DesiredCapacity"] = total
        if total > group["MaxSize"]:
            update["MaxSize"] = total
        if len(update) == 1:
            return  # already so: no mutating call
        client: AutoScalingClient = self.connector.client("autoscaling", self.region)
        await self.connector.call(
            self.region,
            "autoscaling",
            "UpdateAutoScalingGroup",
            functools.partial(client.update_auto_scaling_group, **update),
            mutating=True,
        )

    async def _subnets_in(self, zones: Sequence[str]) -> list[str]:
        """The group's usable subnets that lie in ``zones`` (every zone needs one)."""
        usable = self._subnets or ()
        unknown = [s for s in usable if s not in self._subnet_zones]
        if unknown:
            client: EC2Client = self.connector.client("ec2", self.region)
            answer = await self.connector.call(
                self.region,
                "ec2",
                "DescribeSubnets",
                functools.partial(client.describe_subnets, SubnetIds=unknown),
                mutating=False,
            )
            for subnet in answer["Subnets"]:
                self._subnet_zones[subnet["SubnetId"]] = subnet["AvailabilityZone"]
        chosen = [s for s in usable if self._subnet_zones.get(s) in zones]
        missing = set(zones) - {self._subnet_zones[s] for s in chosen}
        if missing:
            raise ValueError(
                f"Auto Scaling group {self.group_name} has no subnet in zone(s) "
                f"{', '.join(sorted(missing))} (usable subnets: {', '.join(usable) or 'none'})"
            )
        return chosen


def _age(activity: ActivityTypeDef, now: float) -> float:
    started = activity.get("EndTime") or activity.get("StartTime")
    return now - started.timestamp() if isinstance(started, datetime) else 0.0


def _activity_words(activity: ActivityTypeDef) -> str:
    """A failed activity as one line: what it did and why it failed (AWS's own words)."""
    what = str(activity.get("Description", "")).strip() or "a scaling activity"
    why = str(activity.get("StatusMessage", "")).strip() or "no reason given"
    return " ".join(f"{what}: {why}".split())[:400]


def _capacity_code(words: str) -> str | None:
    """The capacity error a failed activity names (None: it failed for another reason)."""
    for code in sorted(AWS_CAPACITY_CODES):
        if code in words:
            return code
    lowered = words.lower()
    if any(marker in lowered for marker in _CAPACITY_WORDS):
        return "InsufficientInstanceCapacity"
    return None
