"""EC2 instance status (and ELB target health) of an Auto Scaling group, per zone, as an
:class:`~controller.providers.protocols.InstanceHealth`.

An instance counts as healthy when all of these hold:

* the group has it ``InService`` and ``Healthy``;
* EC2 says it is ``running`` with instance status and system status ``ok``
  (DescribeInstanceStatus with IncludeAllInstances, so stopped instances are seen too;
  a freshly launched one is ``initializing`` and not yet healthy);
* with a target group: every registration of it there is ``healthy``.

Instances the group is terminating are not counted at all. Every zone the group may use
is reported, with zero instances if it has none.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from typing import TYPE_CHECKING

from controller.providers.aws.capacity import describe_group
from controller.providers.aws.connector import AwsConnector
from controller.providers.protocols import ZoneInstances

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import (
        DescribeInstanceStatusRequestTypeDef,
        InstanceStatusTypeDef,
    )
    from mypy_boto3_elbv2 import ElasticLoadBalancingv2Client

_IDS_PER_CALL = 100
_DETAIL_PROBLEMS = 5


class Ec2InstanceHealth:
    """The instances of one Auto Scaling group, optionally behind one ELBv2 target group."""

    def __init__(
        self,
        connector: AwsConnector,
        region: str,
        group_name: str,
        target_group_arn: str | None = None,
    ) -> None:
        self.connector = connector
        self.region = region
        self.group_name = group_name
        self.target_group_arn = target_group_arn

    def __repr__(self) -> str:
        return f"Ec2InstanceHealth({self.region}/{self.group_name})"

    async def zones(self) -> tuple[ZoneInstances, ...]:
        group = await describe_group(self.connector, self.region, self.group_name)
        members = [
            i
            for i in group.get("Instances", [])
            if not i["LifecycleState"].startswith(("Terminating", "Terminated"))
        ]
        statuses = await self._statuses([i["InstanceId"] for i in members])
        targets = await self._targets() if self.target_group_arn else None
        totals: dict[str, int] = defaultdict(int)
        healthy: dict[str, int] = defaultdict(int)
        problems: dict[str, list[str]] = defaultdict(list)
        for member in members:
            zone, instance_id = member["AvailabilityZone"], member["InstanceId"]
            totals[zone] += 1
            problem = _group_problem(member["LifecycleState"], member["HealthStatus"])
            problem = problem or _ec2_problem(statuses.get(instance_id))
            if problem is None and targets is not None:
                problem = _target_problem(targets.get(instance_id, []))
            if problem is None:
                healthy[zone] += 1
            else:
                problems[zone].append(f"{instance_id}: {problem}")
        zones = sorted(set(group["AvailabilityZones"]) | set(totals))
        return tuple(ZoneInstances(z, totals[z], healthy[z], _detail(problems[z])) for z in zones)

    async def _statuses(self, instance_ids: list[str]) -> dict[str, InstanceStatusTypeDef]:
        """EC2's status of each instance (stopped ones included)."""
        client: EC2Client = self.connector.client("ec2", self.region)
        found: dict[str, InstanceStatusTypeDef] = {}
        for start in range(0, len(instance_ids), _IDS_PER_CALL):
            batch = instance_ids[start : start + _IDS_PER_CALL]
            request: DescribeInstanceStatusRequestTypeDef = {
                "InstanceIds": batch,
                "IncludeAllInstances": True,
            }
            while True:
                answer = await self.connector.call(
                    self.region,
                    "ec2",
                    "DescribeInstanceStatus",
                    functools.partial(client.describe_instance_status, **request),
                    mutating=False,
                )
                for status in answer.get("InstanceStatuses", []):
                    found[status.get("InstanceId", "")] = status
                if not answer.get("NextToken"):
                    break
                request = {**request, "NextToken": answer["NextToken"]}
        return found

    async def _targets(self) -> dict[str, list[tuple[str, str]]]:
        """(state, reason) of every registration in the target group, by target ID."""
        assert self.target_group_arn is not None
        client: ElasticLoadBalancingv2Client = self.connector.client("elbv2", self.region)
        answer = await self.connector.call(
            self.region,
            "elbv2",
            "DescribeTargetHealth",
            functools.partial(client.describe_target_health, TargetGroupArn=self.target_group_arn),
            mutating=False,
        )
        registrations: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for description in answer["TargetHealthDescriptions"]:
            health = description.get("TargetHealth", {})
            registrations[description.get("Target", {}).get("Id", "")].append(
                (str(health.get("State", "unknown")), str(health.get("Reason", "")))
            )
        return registrations


def _group_problem(lifecycle: str, health: str) -> str | None:
    if lifecycle != "InService":
        return f"lifecycle {lifecycle}"
    if health != "Healthy":
        return f"Auto Scaling health {health}"
    return None


def _ec2_problem(status: InstanceStatusTypeDef | None) -> str | None:
    if status is None:
        return "no EC2 status"
    state = status.get("InstanceState", {}).get("Name", "unknown")
    if state != "running":
        return f"instance {state}"
    instance = status.get("InstanceStatus", {}).get("Status", "unknown")
    system = status.get("SystemStatus", {}).get("Status", "unknown")
    if instance != "ok" or system != "ok":
        return f"instance status {instance}, system status {system}"
    return None


def _target_problem(registrations: list[tuple[str, str]]) -> str | None:
    if not registrations:
        return "not registered in the target group"
    for state, reason in registrations:
        if state != "healthy":
            return f"target {state}" + (f" ({reason})" if reason else "")
    return None


def _detail(problems: list[str]) -> str:
    shown = "; ".join(problems[:_DETAIL_PROBLEMS])
    more = len(problems) - _DETAIL_PROBLEMS
    return shown + (f"; and {more} more" if more > 0 else "")
