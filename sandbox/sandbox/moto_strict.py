"""moto's server, with Route 53's change batches as strict as the real service's.

Run as ``python -m sandbox.moto_strict [moto.server options]`` (the sandbox does).

moto (5.x) applies ``ChangeResourceRecordSets`` more loosely than Route 53:

* a DELETE is accepted when an identical record set was *ever* created (its journal),
  even if the record now holds other values, and then deletes every record set of that
  name and type; a DELETE by SetIdentifier deletes that identifier's record sets under
  every name of the zone;
* a CREATE of a record set that exists is refused only if the very same change was made
  before;
* a batch is not all-or-nothing: changes before a failing one stay applied.

Lifeboat's fencing rests on Route 53's documented behaviour ("To delete a resource record
set, you must specify all the same values that you specified when you created it"; a
CREATE fails when the record set exists; "the changes are applied as a transaction: all
or none"), so the sandbox replaces moto's handling with it, checked change by change on a
working copy of the zone and applied only when every change is valid. The errors are
Route 53's: ``InvalidChangeBatch`` with its messages. Nothing here makes moto *more*
capable than Route 53; record types, alias targets and health checks are otherwise moto's.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

from moto.route53.exceptions import (
    DnsNameInvalidForZone,
    InvalidActionValue,
    ResourceRecordAlreadyExists,
    Route53ClientError,
)
from moto.route53.models import RecordSet, Route53Backend
from moto.route53.utils import validate_domain_name


class _RecordSetMissing(Route53ClientError):
    def __init__(self, name: str, type_: str, reason: str) -> None:
        super().__init__(
            "InvalidChangeBatch",
            f"[Tried to delete resource record set [name='{name}', type='{type_}'] but {reason}]",
        )


def _fqdn(name: str) -> str:
    return name if name.endswith(".") else f"{name}."


def _key(name: str, type_: str | None, set_identifier: str | None) -> tuple[str, str, str]:
    return (_fqdn(name).lower(), str(type_ or ""), str(set_identifier or ""))


def _values(record: RecordSet) -> tuple[Any, ...]:
    """Everything a DELETE must repeat exactly (Route 53 compares all of it)."""
    return (
        str(record.ttl) if record.ttl is not None else None,
        tuple(sorted(str(v) for v in record.records or ())),
        str(record.weight) if record.weight is not None else None,
        record.failover,
        record.health_check_id,
        repr(record.alias_target) if record.alias_target else None,
        record.region,
        repr(record.geo_location) if record.geo_location else None,
        record.multi_value_answer,
    )


def _record(raw: dict[str, Any]) -> RecordSet:
    fields = dict(raw)
    fields["Name"] = _fqdn(fields["Name"])
    if "ResourceRecords" in fields:
        fields["ResourceRecords"] = [
            v["Value"] if isinstance(v, dict) else v for v in fields["ResourceRecords"]
        ]
    return RecordSet(fields)  # type: ignore[abstract]  # as moto itself builds them


def change_resource_record_sets(
    self: Route53Backend, zoneid: str, change_list: list[dict[str, Any]]
) -> None:
    """Route 53's semantics: in order, each change checked against the zone as the changes
    before it left it; all applied, or none."""
    zone = self.get_hosted_zone(zoneid)
    working: list[RecordSet] = list(zone.rrsets)
    zone_name = zone.name.strip(".").lower()
    for change in change_list:
        action = change["Action"]
        if action not in ("CREATE", "UPSERT", "DELETE"):
            raise InvalidActionValue(action)
        raw = change["ResourceRecordSet"]
        validate_domain_name(raw["Name"], code="InvalidChangeBatch")
        if not raw["Name"].strip(".").lower().endswith(zone_name):
            raise DnsNameInvalidForZone(name=raw["Name"], zone_name=zone.name)
        new = _record(raw)
        key = _key(new.name, new.type, new.set_identifier)
        index = next(
            (i for i, r in enumerate(working) if _key(r.name, r.type, r.set_identifier) == key),
            None,
        )
        if action == "CREATE":
            if index is not None:
                raise ResourceRecordAlreadyExists(name=new.name, _type=str(new.type))
            working.append(new)
        elif action == "UPSERT":
            if index is None:
                working.append(new)
            else:
                working[index] = new
        elif index is None:
            raise _RecordSetMissing(new.name, str(new.type), "it was not found")
        elif _values(working[index]) != _values(new):
            raise _RecordSetMissing(
                new.name, str(new.type), "the values provided do not match the current values"
            )
        else:
            del working[index]
    zone.rrsets = working
    for change in change_list:
        zone.rr_changes.append(copy.deepcopy(change))


def install() -> None:
    Route53Backend.change_resource_record_sets = change_resource_record_sets  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> None:
    install()
    from moto.server import main as moto_main

    moto_main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
