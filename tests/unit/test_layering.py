"""Only ``controller/providers`` knows the clouds: no module outside it imports a cloud's
subpackage or SDK, or asks whether a connector is of some cloud's type."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from fnmatch import fnmatchcase
from pathlib import Path

import pytest

import controller

PRODUCT = Path(controller.__file__).parent
PROVIDERS = PRODUCT / "providers"
CLOUDS = ("aws", "openstack", "rfc2136", "externaldns")
CLOUD_MODULES = tuple(f"controller.providers.{cloud}" for cloud in CLOUDS)
SDKS = ("boto3", "botocore", "openstack", "keystoneauth1", "mypy_boto3_*", "dns")
"""Top-level modules of the clouds' SDKs (``*``: any module the prefix starts);
``dns`` is dnspython, which RFC 2136 speaks through."""


def _outside_providers() -> Iterator[Path]:
    for path in sorted(PRODUCT.rglob("*.py")):
        if not path.is_relative_to(PROVIDERS):
            yield path


def _imports(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, module) for every absolute import, ``from a import b`` giving ``a.b`` too
    (the product uses no relative imports; ``from .dns_x import y`` is no dnspython)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and not node.level:
            yield node.lineno, node.module
            yield from ((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)


def _type_names(node: ast.expr) -> Iterator[str]:
    """The names an isinstance's second argument checks against."""
    if isinstance(node, ast.Tuple):
        for element in node.elts:
            yield from _type_names(element)
    elif isinstance(node, ast.Name):
        yield node.id
    elif isinstance(node, ast.Attribute):
        yield node.attr


def _connector_checks(tree: ast.AST) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "isinstance"
            and len(node.args) == 2
        ):
            for name in _type_names(node.args[1]):
                if name.endswith("Connector"):
                    yield node.lineno, name


def _is_sdk(module: str) -> bool:
    top = module.split(".")[0]
    return any(fnmatchcase(top, sdk) for sdk in SDKS)


def _findings(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, what) for every way ``tree`` knows a cloud."""
    found = [
        (line, f"imports {module}")
        for line, module in _imports(tree)
        if module.startswith(CLOUD_MODULES) or _is_sdk(module)
    ]
    found += [(line, f"isinstance(..., {name})") for line, name in _connector_checks(tree)]
    return sorted(set(found))


def test_nothing_outside_providers_knows_a_cloud() -> None:
    problems = [
        f"{path.relative_to(PRODUCT.parent)}:{line}: {what}"
        for path in _outside_providers()
        for line, what in _findings(ast.parse(path.read_text(), filename=str(path)))
    ]
    assert problems == []


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("from controller.providers.aws.route53 import HostedZoneError", True),
        ("from controller.providers import openstack", True),
        ("import controller.providers.openstack.dns", True),
        ("import botocore.exceptions", True),
        ("import mypy_boto3_route53", True),
        ("import dns.update", True),
        ("from dns import tsig", True),
        ("from controller.providers.rfc2136.dns import Zone", True),
        ("from controller.providers import externaldns", True),
        ("import controller.providers.externaldns.endpoints", True),
        ("from controller.operator.dns_readback import read_back", False),
        ("import dnsmasq", False),
        ("if isinstance(c, (str, AwsConnector)): pass", True),
        ("if isinstance(c, aws.OpenStackConnector): pass", True),
        ("from controller.providers import registry", False),
        ("from controller.providers.errors import DnsZoneNotFound", False),
        ("if isinstance(e, aiohttp.ClientConnectorError): pass", False),
    ],
)
def test_the_scan_finds_what_it_looks_for(source: str, found: bool) -> None:
    assert bool(_findings(ast.parse(source))) is found
