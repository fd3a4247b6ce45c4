"""The ``lifeboat-sandbox`` command: the local test world, for developers.

``demo``    start the sandbox and show a region failover end to end, with the alerts it
            raises and a timeline picture (``--timeline PNG``) (``make demo``);
            ``--peers``: three peer clusters, and the primary region dies with the peer in
            it (``make demo-peers``)
``up``      start the sandbox with the examples applied and keep it running (``make sandbox``);
            ``--peers``: the three peer clusters, each with its own ``lifeboat run``
``assets``  build or locate kube-apiserver, etcd and kubectl; print their directory
``tools``   fetch or build promtool, Prometheus, Alertmanager and Grafana's dashboard linter;
            print their paths
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from controller.cli.main import setup_logging

PROG = "lifeboat-sandbox"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog=PROG,
        description="Lifeboat's local test world: a real kube-apiserver + etcd, moto, "
        "Keystone/Swift with emulated Nova, Designate and Cinder, zonal endpoints and "
        "fault proxies, all on loopback.",
    )
    top.add_argument("--log-level", default=os.environ.get("LIFEBOAT_LOG_LEVEL", "info"))
    commands = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    demo = commands.add_parser(
        "demo", help="start the sandbox and show a region failover end to end"
    )
    demo.add_argument("--verbose", action="store_true", help="also show the operator's logs")
    demo.add_argument(
        "--timeline",
        metavar="PNG",
        type=Path,
        help="write the timeline picture (rendered from the operator's metrics in the "
        "demo's Prometheus) here; default: <cache>/demo/lifeboat-demo-timeline.png "
        "(the path is printed)",
    )
    demo.add_argument("--no-timeline", action="store_true", help="do not draw the timeline picture")
    demo.add_argument(
        "--peers",
        action="store_true",
        help="three Lifeboat peers in three regions; the primary region dies with its peer",
    )
    up = commands.add_parser("up", help="start the sandbox and keep it running until Ctrl-C")
    up.add_argument(
        "--peers",
        action="store_true",
        help="three peer clusters (us-east-1, us-west-2, eu-central-1), each running "
        "lifeboat run --peer-name",
    )
    commands.add_parser("assets", help="build or locate kube-apiserver, etcd and kubectl")
    commands.add_parser(
        "tools",
        help="fetch or build promtool, Prometheus, Alertmanager and Grafana's dashboard "
        "linter; print their paths",
    )
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    setup_logging(args.log_level, "text")
    if args.command == "demo" and args.peers:
        from sandbox.demo_peers import run_peers_demo

        return run_peers_demo(verbose=args.verbose)
    if args.command == "demo":
        from sandbox.demo import run_demo

        return run_demo(
            verbose=args.verbose, timeline_path=args.timeline, draw=not args.no_timeline
        )
    if args.command == "up" and args.peers:
        from sandbox.demo_peers import run_peers_sandbox

        return run_peers_sandbox()
    if args.command == "up":
        from sandbox.demo import run_sandbox

        return run_sandbox()
    if args.command == "assets":
        return _assets()
    if args.command == "tools":
        return _tools()
    return EXIT_USAGE  # pragma: no cover - argparse rejects unknown commands


def _log(line: str) -> None:
    print(line, file=sys.stderr)


def _assets() -> int:
    """``lifeboat-sandbox assets``: the directory of the control-plane binaries."""
    from sandbox import assets

    try:
        found = assets.ensure_assets(log=_log)
    except assets.AssetsError as error:
        print(f"{PROG} assets: {error}", file=sys.stderr)
        return EXIT_FAILED
    print(found.kube_apiserver.parent)
    return EXIT_OK


def _tools() -> int:
    """``lifeboat-sandbox tools``: the monitoring tools the tests use, one per line."""
    from sandbox import tools

    try:
        found = {
            "promtool": tools.ensure_promtool(log=_log),
            "prometheus": tools.ensure_prometheus(log=_log),
            "alertmanager": tools.ensure_alertmanager(log=_log),
            "dashboard-linter": tools.ensure_dashboard_linter(log=_log),
        }
    except tools.ToolError as error:
        print(f"{PROG} tools: {error}", file=sys.stderr)
        return EXIT_FAILED
    for name, path in found.items():
        print(f"{name}\t{path}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
