"""The EC2 API as Lifeboat's clients know it: botocore's model cut to the operations the
AWS providers call.

botocore's EC2 model describes some 830 operations; loaded, it is about 15 MiB of Python
objects in the operator, held for as long as an EC2 client lives (the API-plane probe's
client does, for every AWS CloudProvider). The operator calls 8 of them. The model cut to
those and the shapes they reach is a 92 KB file in :data:`DATA_PATH`, which the
connector puts first on its botocore session's ``data_path`` (botocore's documented
search path for models: a service found there is loaded from there); a fresh session's
first EC2 client then costs about 8 MiB RSS instead of 24 (bench/RESULTS.md, "Operator
memory"). Every other service is botocore's own.

The file is generated from the installed botocore (``python -m hack.ec2_model``), and a
unit test fails when it differs from what :func:`trimmed` makes of the installed model,
or when the providers call an EC2 operation that is not in :data:`EC2_OPERATIONS`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

DATA_PATH = Path(__file__).with_name("botocore_data")
"""The directory put first on the botocore session's ``data_path``."""

EC2_OPERATIONS = (
    "CopySnapshot",
    "CreateSnapshot",
    "CreateVolume",
    "DeleteSnapshot",
    "DescribeAvailabilityZones",
    "DescribeSnapshots",
    "DescribeSubnets",
    "DescribeVolumes",
)
"""The EC2 operations the AWS providers call (the API-plane probe, volume snapshots, an
Auto Scaling group's subnets)."""


def trimmed(model: dict[str, Any], operations: tuple[str, ...] = EC2_OPERATIONS) -> dict[str, Any]:
    """``model`` (a botocore ``service-2`` document) with only ``operations`` and the
    shapes they reach; the rest (metadata, version, documentation of the kept parts) as
    it is."""
    kept = {name: model["operations"][name] for name in operations}
    pending = [
        ref["shape"]
        for operation in kept.values()
        for ref in (operation.get("input"), operation.get("output"), *operation.get("errors", ()))
        if ref
    ]
    shapes: set[str] = set()
    while pending:
        name = pending.pop()
        if name in shapes:
            continue
        shapes.add(name)
        shape = model["shapes"][name]
        pending.extend(member["shape"] for member in shape.get("members", {}).values())
        pending.extend(shape[key]["shape"] for key in ("member", "key", "value") if key in shape)
    rest = {key: value for key, value in model.items() if key not in ("operations", "shapes")}
    return {
        **rest,
        "operations": kept,
        "shapes": {name: model["shapes"][name] for name in sorted(shapes)},
    }
