"""The ``lifeboat`` command."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from controller import __version__

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # The SDKs are chatty at INFO and can echo request details; keep them at WARNING.
    for noisy in ("botocore", "boto3", "urllib3", "kubernetes", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


KUBECTL_PLUGIN = "kubectl-lifeboat"
EXIT_CODES = """exit codes (cluster commands):
  0  done, or accepted by the operator
  1  refused (by the operator's safety checks, or forbidden by the API server) or failed
  2  usage error (bad arguments, a site the app does not have)
  3  not found (the app, the ResilientApp CRD) or the cluster cannot be reached
  4  no answer from the operator in time (is it running?)"""


def program_name(argv0: str | None = None) -> str:
    """``kubectl lifeboat`` when run as the kubectl plugin (kubectl-lifeboat), else lifeboat."""
    name = Path(argv0 if argv0 is not None else sys.argv[0]).name
    return "kubectl lifeboat" if name.startswith(KUBECTL_PLUGIN) else "lifeboat"


def parser(prog: str = "lifeboat") -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog=prog,
        description="Keeps an application available through zone, region and cloud "
        "API-plane outages.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--version", action="version", version=f"lifeboat {__version__}")
    top.add_argument("--log-level", default=os.environ.get("LIFEBOAT_LOG_LEVEL", "info"))
    top.add_argument("--log-format", choices=("text", "json"), default="text")
    commands = top.add_subparsers(dest="command", metavar="COMMAND")
    plugin = prog != "lifeboat"

    def local(help_text: str) -> dict[str, Any]:
        """Help of a command that is not about the cluster: left out of the kubectl plugin's
        command list (the command still works there)."""
        return {} if plugin else {"help": help_text}

    run = commands.add_parser("run", **local("run the operator against the current cluster"))
    run.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, in-cluster)")
    run.add_argument("--context", help="kubeconfig context")
    run.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        help="serve ResilientApps in this namespace (repeatable; default: all namespaces)",
    )
    run.add_argument(
        "--controller-namespace",
        default=os.environ.get("LIFEBOAT_CONTROLLER_NAMESPACE", "lifeboat-system"),
        help="namespace of Lifeboat itself, where credentials Secrets live",
    )
    run.add_argument("--metrics-address", default="0.0.0.0", help="'' disables metrics")  # noqa: S104
    run.add_argument("--metrics-port", type=int, default=8080)
    run.add_argument(
        "--no-leader-election",
        dest="leader_election",
        action="store_false",
        help="act without holding the lifeboat Lease (only if no other instance can run)",
    )
    run.add_argument("--lease-seconds", type=float, default=15.0, help="leader Lease duration")
    run.add_argument(
        "--health-endpoint",
        default="http://0.0.0.0:8081/healthz",
        help="liveness endpoint URL to serve ('' disables)",
    )

    demo = commands.add_parser(
        "demo",
        **local("start the local sandbox and show a region failover end to end"),
    )
    demo.add_argument("--verbose", action="store_true", help="also show the operator's logs")

    simulate = commands.add_parser(
        "simulate",
        **local("run the decision core offline on a timeline; print decisions as JSON"),
    )
    simulate.add_argument("app", help="ResilientApp YAML (the resource or just its spec)")
    simulate.add_argument("timeline", help="timeline YAML (see the README)")
    simulate.add_argument(
        "--provider",
        action="append",
        default=[],
        help="CloudProvider YAML whose apiPlane thresholds to use (repeatable)",
    )

    def cluster_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG)")
        sub.add_argument("--context", help="kubeconfig context (default: the current one)")

    def app_command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.add_argument("app", help="ResilientApp name")
        sub.add_argument(
            "-n", "--namespace", help="its namespace (default: the kubeconfig context's)"
        )
        cluster_options(sub)
        return sub

    status = commands.add_parser(
        "status",
        help="a table of apps: active site, state, healthy zones, RPO, last failover",
        description="A table of ResilientApps: active site, state, healthy/total zones, RPO\n"
        "(the largest of the app's replication RPOs; - when it replicates nothing) and the\n"
        "age of the last failover.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    status.add_argument("app", nargs="?", help="only this ResilientApp")
    where = status.add_mutually_exclusive_group()
    where.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig context's)")
    where.add_argument(
        "-A", "--all-namespaces", action="store_true", help="apps of every namespace"
    )
    status.add_argument(
        "-o",
        "--output",
        choices=("table", "wide", "json"),
        default="table",
        help="table (default), wide (adds route, epoch, mode, pin, recommendation) or json",
    )
    cluster_options(status)

    app_command("explain", "where an app stands, its last decision and why, recent events")
    failover = app_command("failover", "move an app to another site (safety checks apply)")
    failover.add_argument("--to", required=True, metavar="SITE", help="target site")
    failback = app_command("failback", "move an app back to its declared primary")
    for sub in (failover, failback):
        sub.add_argument("--force", action="store_true", help="skip the safety checks")
        sub.add_argument("--wait", type=float, default=60.0, help="seconds to wait for it")
    approve = app_command("approve", "carry out an app's recommendation (Manual mode)")
    approve.add_argument("--id", help="the recommendation to approve (default: the current)")
    pin = app_command("pin", "keep an app where it is: nothing moves it automatically")
    pin.add_argument("--site", help="site to pin to (default: the active site)")
    app_command("unpin", "let Lifeboat move the app again")

    sandbox = commands.add_parser("sandbox", **local("the local sandbox")).add_subparsers(
        dest="sandbox_command", metavar="SANDBOX_COMMAND", required=True
    )
    sandbox.add_parser("assets", help="build or locate kube-apiserver, etcd and kubectl")
    sandbox.add_parser(
        "tools", help="fetch or build promtool and Grafana's dashboard linter; print their paths"
    )
    sandbox.add_parser("up", help="start the sandbox and keep it running until Ctrl-C")

    dev = commands.add_parser("dev", **local("developer tasks")).add_subparsers(
        dest="dev_command", metavar="DEV_COMMAND", required=True
    )
    gen = dev.add_parser("generate-manifests", help="regenerate CRDs, bundle and chart files")
    gen.add_argument("--check", action="store_true", help="fail if a generated file is stale")
    return top


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    prog = prog or program_name()
    args = parser(prog).parse_args(argv)
    args.prog = prog
    setup_logging(args.log_level, args.log_format)
    if args.command is None:
        parser(prog).print_help()
        return EXIT_USAGE
    if args.command == "run":
        return _run(args)
    if args.command == "demo":
        from controller.sandbox.demo import run_demo

        return run_demo(verbose=args.verbose)
    if args.command == "sandbox":
        return _sandbox(args)
    if args.command == "simulate":
        return _simulate(args)
    if args.command in ("status", "explain", "failover", "failback", "approve", "pin", "unpin"):
        return _app_command(args)
    if args.command == "dev":
        return _dev(args)
    return EXIT_USAGE  # pragma: no cover - argparse rejects unknown commands


def _run(args: argparse.Namespace) -> int:
    from controller.operator.kubeconfig import KubeConfigError
    from controller.operator.leader import LeadershipLost
    from controller.operator.runner import OperatorConfig, run

    config = OperatorConfig(
        kubeconfig=args.kubeconfig,
        context=args.context,
        namespaces=tuple(args.namespace),
        controller_namespace=args.controller_namespace,
        metrics_address=args.metrics_address or None,
        metrics_port=args.metrics_port,
        liveness_endpoint=args.health_endpoint or None,
        leader_election=args.leader_election,
        lease_seconds=args.lease_seconds,
    )
    try:
        run(config)
    except (KubeConfigError, LeadershipLost) as error:
        print(f"lifeboat: {error}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _simulate(args: argparse.Namespace) -> int:
    from controller.cli.simulate import TimelineError, run

    try:
        document, summary = run(
            Path(args.app), Path(args.timeline), [Path(p) for p in args.provider]
        )
    except TimelineError as error:
        print(f"lifeboat simulate: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(document)
    print(summary, file=sys.stderr)
    return EXIT_OK


def _app_command(args: argparse.Namespace) -> int:
    from controller.cli import commands

    try:
        cluster = commands.Cluster.connect(args.kubeconfig, args.context)
        namespace = args.namespace or cluster.namespace
        if args.command == "status":
            return commands.status(
                cluster,
                None if args.all_namespaces else namespace,
                args.app,
                output=args.output,
            )
        if args.command == "explain":
            return commands.explain(cluster, namespace, args.app, prog=args.prog)
        if args.command in ("failover", "failback"):
            site = args.to if args.command == "failover" else None
            return commands.request(
                cluster,
                namespace,
                args.app,
                args.command,
                site,
                force=args.force,
                wait=args.wait,
                prog=args.prog,
            )
        if args.command == "approve":
            return commands.approve(cluster, namespace, args.app, args.id)
        site = args.site if args.command == "pin" else ""
        return commands.pin(cluster, namespace, args.app, site)
    except commands.CommandError as error:
        print(f"{args.prog} {args.command}: {error}", file=sys.stderr)
        return error.code
    except BrokenPipeError:  # `... | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _sandbox(args: argparse.Namespace) -> int:
    from controller.sandbox import assets

    if args.sandbox_command == "assets":
        try:
            found = assets.ensure_assets(log=lambda line: print(line, file=sys.stderr))
        except assets.AssetsError as error:
            print(f"lifeboat: {error}", file=sys.stderr)
            return EXIT_FAILED
        print(found.kube_apiserver.parent)
        return EXIT_OK
    if args.sandbox_command == "tools":
        return _tools()
    from controller.sandbox.demo import run_sandbox

    return run_sandbox()


def _tools() -> int:
    """``lifeboat sandbox tools``: the monitoring tools the tests use, one per line."""
    from controller.sandbox import tools

    def log(line: str) -> None:
        print(line, file=sys.stderr)

    try:
        found = {
            "promtool": tools.ensure_promtool(log=log),
            "dashboard-linter": tools.ensure_dashboard_linter(log=log),
        }
    except tools.ToolError as error:
        print(f"lifeboat: {error}", file=sys.stderr)
        return EXIT_FAILED
    for name, path in found.items():
        print(f"{name}\t{path}")
    return EXIT_OK


def _dev(args: argparse.Namespace) -> int:
    from controller.cli import generate

    root = generate.repo_root()
    if args.check:
        stale = generate.stale(root)
        for path in stale:
            print(f"stale: {path.relative_to(root)} (run `make manifests`)", file=sys.stderr)
        return EXIT_FAILED if stale else EXIT_OK
    for path in generate.write(root):
        print(f"wrote {path.relative_to(root)}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
