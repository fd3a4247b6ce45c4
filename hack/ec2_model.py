"""Write the trimmed EC2 model (:mod:`controller.providers.aws.ec2_model`) from the
installed botocore: ``python -m hack.ec2_model``. Run it after upgrading botocore when
tests/unit/test_ec2_model.py says the file differs."""

from __future__ import annotations

import json
import shutil
import sys

import botocore.session

from controller.providers.aws.ec2_model import DATA_PATH, trimmed


def model_file() -> tuple[str, str]:
    """(API version, the trimmed model's text) from the installed botocore."""
    loader = botocore.session.get_session().get_component("data_loader")
    version: str = loader.determine_latest_version("ec2", "service-2")
    model = loader.load_service_model("ec2", "service-2", api_version=version)
    return version, json.dumps(trimmed(model), indent=1, sort_keys=True) + "\n"


def main() -> int:
    version, text = model_file()
    shutil.rmtree(DATA_PATH / "ec2", ignore_errors=True)
    target = DATA_PATH / "ec2" / version / "service-2.json"
    target.parent.mkdir(parents=True)
    target.write_text(text, encoding="utf-8")
    print(f"wrote {target} ({len(text):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
