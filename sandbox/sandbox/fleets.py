"""The sample app's servers in moto: a VPC, a subnet per zone and an Auto Scaling group.

Each AWS site of the sandbox gets what a real deployment has: a VPC in its region, one
subnet in each of its availability zones, a launch template and an Auto Scaling group
spread over those subnets. Lifeboat moves capacity by changing the group (its subnets and
desired capacity); the tests read the group back from moto to see what it did.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ClientFactory = Callable[[str, str], Any]
"""(service, region) -> a boto3 client straight to moto."""


@dataclass(frozen=True)
class Fleet:
    """What was created for one site."""

    site: str
    region: str
    group: str
    subnets: dict[str, str]
    """zone -> subnet ID."""


def create_fleet(
    client: ClientFactory, site: str, region: str, zones: tuple[str, ...], per_zone: int, index: int
) -> Fleet:
    """A VPC with a subnet per zone and an Auto Scaling group of ``per_zone`` x zones."""
    ec2 = client("ec2", region)
    vpc = ec2.create_vpc(CidrBlock=f"10.{index}.0.0/16")["Vpc"]["VpcId"]
    subnets = {
        zone: ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.{index}.{n}.0/24", AvailabilityZone=zone)[
            "Subnet"
        ]["SubnetId"]
        for n, zone in enumerate(zones)
    }
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    template = f"web-{site}"
    ec2.create_launch_template(
        LaunchTemplateName=template,
        LaunchTemplateData={"ImageId": image, "InstanceType": "t3.micro"},
    )
    group = f"web-{site}"
    client("autoscaling", region).create_auto_scaling_group(
        AutoScalingGroupName=group,
        LaunchTemplate={"LaunchTemplateName": template, "Version": "$Latest"},
        MinSize=0,
        MaxSize=max(10, per_zone * len(zones) * 2),
        DesiredCapacity=per_zone * len(zones),
        VPCZoneIdentifier=",".join(subnets[z] for z in zones),
    )
    return Fleet(site, region, group, subnets)


def group_state(client: ClientFactory, fleet: Fleet) -> tuple[int, set[str]]:
    """The group's desired capacity and the zones its subnets are in, as moto has them."""
    group = client("autoscaling", fleet.region).describe_auto_scaling_groups(
        AutoScalingGroupNames=[fleet.group]
    )["AutoScalingGroups"][0]
    subnets = {s for s in group["VPCZoneIdentifier"].split(",") if s}
    zones = {zone for zone, subnet in fleet.subnets.items() if subnet in subnets}
    return int(group["DesiredCapacity"]), zones
