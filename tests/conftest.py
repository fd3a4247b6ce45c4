"""Shared pytest configuration: the sandbox fixtures live in tests/fixtures/."""

pytest_plugins = [
    "tests.fixtures.kube",
    "tests.fixtures.cloud",
    "tests.fixtures.world",
    "tests.fixtures.peers",
    "tests.fixtures.openstack",
    "tests.fixtures.helm",
    "tests.fixtures.monitoring",
]
