"""The names Lifeboat is known by in a cluster: API group and version, its kinds, the
finalizer, labels, the Events' reporter, and the ``lifeboat.dev/*`` keys it writes on
cloud resources and on the objects external-dns reads.

These are part of the API: RBAC rules, ``kubectl`` commands, alerts and users' scripts
name them, so each is written here once and never changed lightly. Pure constants: the
CLI imports this module without pulling in the resource models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

GROUP: Final = "lifeboat.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"


@dataclass(frozen=True)
class Resource:
    """One kind of the API and the names the API server serves it under."""

    kind: str
    plural: str
    scope: Literal["Cluster", "Namespaced"]
    short_names: tuple[str, ...] = ()

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        """The name of its CustomResourceDefinition (``<plural>.<group>``)."""
        return f"{self.plural}.{GROUP}"


RESILIENT_APP: Final = Resource("ResilientApp", "resilientapps", "Namespaced", ("rapp",))
CLOUD_PROVIDER: Final = Resource("CloudProvider", "cloudproviders", "Cluster", ("cprov",))
LIFEBOAT_PEERS: Final = Resource("LifeboatPeers", "lifeboatpeers", "Cluster", ("lbpeers",))
FAILOVER_DRILL: Final = Resource("FailoverDrill", "failoverdrills", "Namespaced", ("drill",))
CATEGORY: Final = "lifeboat"
"""``kubectl get lifeboat`` lists every kind in this category."""

FINALIZER: Final = f"{GROUP}/finalizer"
"""Put on every object kopf runs a daemon for, so the daemon stops before it goes away."""

DRILL_ANNOTATION: Final = f"{GROUP}/drill"
"""On a ResilientApp: the FailoverDrill running on it (one at a time). Set when a run
makes its first move, cleared when the run ends."""
ABORT_ANNOTATION: Final = f"{GROUP}/abort"
"""On a FailoverDrill: the number of the run to abort (``lifeboat drill abort``)."""

PART_OF_LABEL: Final = "app.kubernetes.io/part-of"
PART_OF: Final = "lifeboat"
"""Value of :data:`PART_OF_LABEL` on everything Lifeboat installs (its CRDs, say)."""

REPORTING_COMPONENT: Final = f"{GROUP}/operator"
"""``reportingComponent`` of the Events Lifeboat posts."""
EVENT_SOURCE: Final = "lifeboat"
"""``source.component`` of the Events Lifeboat posts."""

# Tags (EBS snapshots and volumes) and metadata keys (Cinder backups and volumes, Nova
# servers) Lifeboat writes on cloud resources: it finds its own by them, so they are part
# of the API too (controller/replication/volumes.py describes each volume tag).
TAG_APP: Final = f"{GROUP}/app"
"""``namespace/name`` of the ResilientApp."""
TAG_DATASET: Final = f"{GROUP}/dataset"
TAG_SITE: Final = f"{GROUP}/site"
"""The site a snapshot, copy or volume is held at; on Nova servers, the metadata item
naming the site a server belongs to."""
TAG_VOLUME: Final = f"{GROUP}/volume"
TAG_VOLUME_ID: Final = f"{GROUP}/volume-id"
TAG_EPOCH: Final = f"{GROUP}/epoch"
TAG_ORIGIN: Final = f"{GROUP}/origin"
TAG_KIND: Final = f"{GROUP}/kind"
TAG_COPY_OF: Final = f"{GROUP}/copy-of"
TAG_TAKEN: Final = f"{GROUP}/taken"
TAG_RESTORED_FOR: Final = f"{GROUP}/restored-for"
"""On restored volumes: ``site/epoch`` of the failover that made them."""

DNS_OWNER_ANNOTATION: Final = f"{GROUP}/dns-owner"
"""On the DNSEndpoint objects Lifeboat makes for external-dns: the record's owner."""
DNS_NAME_ANNOTATION: Final = f"{GROUP}/dns-name"
"""On the DNSEndpoint objects Lifeboat makes for external-dns: the record's name."""
