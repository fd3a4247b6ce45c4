"""AWS (and EC2/Route 53/S3-compatible clouds) behind the provider Protocols, with boto3."""

from controller.providers.aws.apiplane import Ec2ApiPlaneProbe
from controller.providers.aws.capacity import AutoScalingGroupCapacity, AutoScalingGroupNotFound
from controller.providers.aws.instances import Ec2InstanceHealth
from controller.providers.aws.objects import IntegrityError, S3ObjectStore
from controller.providers.aws.route53 import HostedZoneError, Route53Traffic
from controller.providers.aws.volumes import EbsSnapshots

__all__ = [
    "AutoScalingGroupCapacity",
    "AutoScalingGroupNotFound",
    "EbsSnapshots",
    "Ec2ApiPlaneProbe",
    "Ec2InstanceHealth",
    "HostedZoneError",
    "IntegrityError",
    "Route53Traffic",
    "S3ObjectStore",
]
