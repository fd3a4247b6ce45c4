"""The ``lifeboat`` command."""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import re
import sys
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from controller import __version__

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
MIN_SECRET_RECHECK_SECONDS = 5.0


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


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
GLOBAL_OPTIONS = ("--log-level", "--log-format", "--version")
"""Options of the command itself: given after a subcommand they are a usage error."""


def log_level(text: str) -> str:
    """A log level name, in any case (argparse type)."""
    if text.lower() not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(
            f"invalid log level {text!r} (choose from {', '.join(LOG_LEVELS)})"
        )
    return text.lower()


def port(text: str) -> int:
    """A TCP port, 0 (any free port) to 65535 (argparse type)."""
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: not a number") from None
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {number}: must be 0-65535")
    return number


def address(text: str) -> str:
    """An address to listen on: an IP address or a host name, or '' (argparse type)."""
    if text == "":
        return text
    try:
        ipaddress.ip_address(text)
    except ValueError:
        if not _HOST.fullmatch(text):
            raise argparse.ArgumentTypeError(
                f"invalid address {text!r}: give an IP address or a host name"
            ) from None
    return text


_HOST = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)


def endpoint(text: str) -> str:
    """An http://host:port/path URL to serve, or '' (argparse type)."""
    if text == "":
        return text
    try:
        parts = urllib.parse.urlsplit(text)
        given_port = parts.port
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"invalid endpoint {text!r}: {error}") from None
    if parts.scheme != "http" or not parts.hostname or parts.query or parts.fragment:
        raise argparse.ArgumentTypeError(
            f"invalid endpoint {text!r}: give http://HOST:PORT/PATH (e.g. "
            "http://0.0.0.0:8081/healthz)"
        )
    address(parts.hostname)
    if given_port is None:
        raise argparse.ArgumentTypeError(f"invalid endpoint {text!r}: no port")
    return text


def misplaced_global(argv: Sequence[str], commands: Sequence[str]) -> str | None:
    """A global option given after the subcommand (``lifeboat status --log-level debug``),
    which argparse would otherwise read as an unknown argument or, worse, as a value."""
    seen_command = False
    takes_value = {"--log-level", "--log-format"}
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--":
            return None
        if not seen_command:
            if arg in takes_value:
                skip = True
            elif arg in commands:
                seen_command = True
            continue
        name = arg.split("=", 1)[0]
        if name in GLOBAL_OPTIONS:
            return name
    return None


KUBECTL_PLUGIN = "kubectl-lifeboat"
ANSWER_SECONDS = 60.0
"""How long failover, failback wait for the operator's answer without --wait."""
FOLLOW_SECONDS = 600.0
"""How long --wait follows an operation when given no SECONDS."""
EXIT_CODES = """exit codes (cluster commands):
  0  done, or accepted by the operator
  1  refused (by the operator's safety checks, or forbidden by the API server) or failed
  2  usage error (bad arguments, a site the app does not have)
  3  not found (the app, the ResilientApp CRD) or the cluster cannot be reached
  4  no answer from the operator in time (is it running?); with --wait: not done in time
  5  --wait: accepted but not completed (the new site's capacity not Ready within
     capacityTimeoutSeconds, or overtaken by another failover)

--wait [SECONDS] follows failover, failback and approve to their end (DNS in sync,
capacity Ready at the new site; a planned switchover: writes resumed), one line per step;
without it they wait up to 60 s for the operator's answer only."""


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
    top.add_argument(
        "--log-level",
        type=log_level,
        default=os.environ.get("LIFEBOAT_LOG_LEVEL", "info"),
        help=f"{', '.join(LOG_LEVELS)} (default: $LIFEBOAT_LOG_LEVEL or info); before the command",
    )
    top.add_argument(
        "--log-format", choices=("text", "json"), default="text", help="before the command"
    )
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
    run.add_argument(
        "--metrics-address",
        type=address,
        default="0.0.0.0",  # noqa: S104 - scraped at the pod IP
        help="address to serve metrics on ('' disables metrics)",
    )
    run.add_argument("--metrics-port", type=port, default=8080, help="0-65535 (0: any free)")
    run.add_argument(
        "--no-leader-election",
        dest="leader_election",
        action="store_false",
        help="act without holding the lifeboat Lease (only if no other instance can run)",
    )
    run.add_argument(
        "--lease-seconds",
        type=float,
        default=10.0,
        help="leader Lease duration; the renew deadline is 2/3 of it, retries every 2 s",
    )
    run.add_argument(
        "--peer-name",
        default=os.environ.get("LIFEBOAT_PEER_NAME") or None,
        help="run as this peer of LifeboatPeers/lifeboat (multi-cluster mode: act only while "
        "holding the lifeboat Lease in a majority of the peer clusters; default: one cluster)",
    )
    run.add_argument(
        "--shard",
        default=os.environ.get("LIFEBOAT_SHARD") or "0/1",
        help="I/N: serve only the ResilientApps whose namespace/name hashes to shard I of N, "
        "electing a leader on the Lease lifeboat-shard-I-of-N (default 0/1: every app)",
    )
    run.add_argument(
        "--secret-recheck-seconds",
        type=float,
        default=60.0,
        help="re-read every CloudProvider's credentials Secret this often: a rotated Secret "
        "reconnects the provider and restarts its replication flows (at least 5)",
    )
    run.add_argument(
        "--event-loop",
        choices=("auto", "uvloop", "asyncio"),
        default=os.environ.get("LIFEBOAT_EVENT_LOOP", "auto"),
        help="auto: uvloop where installed (probes cost a third of their CPU), else asyncio",
    )
    run.add_argument(
        "--probe-source-address",
        metavar="IP",
        help="local IP address to probe zones from (default: the kernel's choice), e.g. "
        "the address of one network path, or a peer's own loopback address in the sandbox",
    )
    run.add_argument(
        "--health-endpoint",
        type=endpoint,
        default="http://0.0.0.0:8081/healthz",
        help="liveness endpoint URL to serve ('' disables)",
    )

    simulate = commands.add_parser(
        "simulate",
        **local("run the decision core offline on a timeline; print its decisions"),
    )
    simulate.add_argument("app", help="ResilientApp YAML (the resource or just its spec)")
    simulate.add_argument("timeline", help="timeline YAML (see docs/simulate.md)")
    simulate.add_argument(
        "--provider",
        action="append",
        default=[],
        help="CloudProvider YAML whose apiPlane thresholds to use (repeatable)",
    )
    simulate.add_argument(
        "-o",
        "--output",
        choices=("table", "json"),
        help="table: the injected events and the decisions interleaved, for a person "
        "(default on a terminal); json: {events, decisions}, a summary on stderr (default "
        "otherwise)",
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
    follow_help = (
        "follow it to its end (DNS in sync, capacity Ready), at most SECONDS (default 600); "
        "without --wait, only the operator's answer is waited for (60 s)"
    )
    for sub in (failover, failback):
        sub.add_argument("--force", action="store_true", help="skip the safety checks")
        sub.add_argument(
            "--planned",
            action="store_true",
            help="a switchover without loss: stop writes at the active site (the app's "
            "failover.planned.writeFence), wait for replication to drain, then move",
        )
    approve = app_command("approve", "carry out an app's recommendation (Manual mode)")
    approve.add_argument("--id", help="the recommendation to approve (default: the current)")
    for sub in (failover, failback, approve):
        sub.add_argument(
            "--wait",
            type=float,
            nargs="?",
            const=FOLLOW_SECONDS,
            default=None,
            metavar="SECONDS",
            help=follow_help,
        )
    pin = app_command("pin", "keep an app where it is: nothing moves it automatically")
    pin.add_argument("--site", help="site to pin to (default: the active site)")
    app_command("unpin", "let Lifeboat move the app again")

    drill = commands.add_parser(
        "drill",
        help="failover drills: run one now, show their reports, abort one",
        description="FailoverDrills: practice failovers with the same safety checks and "
        "fencing as real ones\n(docs/drills.md).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    drill_commands = drill.add_subparsers(dest="drill_command", required=True)
    drill_run = drill_commands.add_parser(
        "run",
        help="run a drill against an app now (creates a FailoverDrill that runs once)",
        description="Create a FailoverDrill that runs once, now: move APP to --to, hold, "
        "move it back\n(Switchover); take --zone of its active site out of traffic, hold, put "
        "it back\n(ZoneEvacuation); or replay --timeline against its spec (Observe).",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    drill_run.add_argument("app", help="ResilientApp name")
    drill_run.add_argument(
        "--kind",
        default="Switchover",
        choices=("Switchover", "ZoneEvacuation", "Observe"),
        help="kind of drill (default Switchover)",
    )
    drill_run.add_argument(
        "--zone",
        help="ZoneEvacuation: the zone of the app's active site to take out of traffic",
    )
    drill_run.add_argument(
        "--to",
        metavar="SITE",
        help="Switchover: the standby to move to; Observe: the site the failover must go to",
    )
    drill_run.add_argument(
        "--timeline",
        metavar="FILE",
        help="Observe: the fault timeline to replay (lifeboat simulate's format)",
    )
    drill_run.add_argument(
        "--within",
        type=float,
        metavar="SECONDS",
        help="Observe: expect a failover within this many seconds of the timeline's start",
    )
    drill_run.add_argument(
        "--no-failover", action="store_true", help="Observe: expect no failover at all"
    )
    drill_run.add_argument(
        "--hold",
        type=int,
        default=300,
        help="seconds on the target (or with the zone out) before moving back",
    )
    drill_run.add_argument("--name", help="the FailoverDrill's name (default: app-kind-time)")
    drill_run.add_argument(
        "--wait",
        type=float,
        default=0.0,
        help="seconds to follow the drill to its end (0: return once it is created)",
    )
    drill_status = drill_commands.add_parser(
        "status",
        help="the namespace's drills, or one drill's report",
        description="A table of FailoverDrills, or the report of one drill's last run.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    drill_status.add_argument("name", nargs="?", help="only this FailoverDrill (its report)")
    drill_status.add_argument(
        "-o", "--output", choices=("table", "json"), default="table", help="table or json"
    )
    drill_abort = drill_commands.add_parser(
        "abort",
        help="abort a running drill: the app is moved back where it started",
        description="Abort the run under way of a FailoverDrill; the app is moved back.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    drill_abort.add_argument("name", help="FailoverDrill name")
    drill_abort.add_argument(
        "--wait", type=float, default=0.0, help="seconds to follow the abort to its end"
    )
    for sub in (drill_run, drill_status, drill_abort):
        sub.add_argument(
            "-n", "--namespace", help="its namespace (default: the kubeconfig context's)"
        )
        cluster_options(sub)

    replication = commands.add_parser(
        "replication",
        help="replication of an app's data",
        description="Replication of an app's data.",
    )
    replication_commands = replication.add_subparsers(dest="replication_command", required=True)
    text = (
        "objects of an older epoch that never reached the active site (after a failover, the\n"
        "old primary's writes the new one did not get): list them (default), merge them into\n"
        "the active site (--merge), or delete them where they are (--discard)"
    )
    tail = replication_commands.add_parser(
        "unreplicated",
        help="list, merge or discard objects of an older epoch the active site never got",
        description=text,
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tail.add_argument("app", help="ResilientApp name")
    tail.add_argument("-n", "--namespace", help="its namespace (default: the kubeconfig context's)")
    what = tail.add_mutually_exclusive_group()
    what.add_argument(
        "--merge",
        dest="action",
        action="store_const",
        const="merge",
        help="copy them to the active site (never over an object there)",
    )
    what.add_argument(
        "--discard",
        dest="action",
        action="store_const",
        const="discard",
        help="delete them at the site that holds them",
    )
    tail.add_argument("--dataset", help="only this object dataset (default: every one)")
    tail.add_argument("--wait", type=float, default=300.0, help="seconds to wait for it")
    cluster_options(tail)
    return top


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    prog = prog or program_name()
    top = parser(prog)
    given = list(sys.argv[1:] if argv is None else argv)
    if (option := misplaced_global(given, _commands(top))) is not None:
        top.error(f"{option} is an option of {prog} itself: give it before the command")
    args = top.parse_args(given)
    args.prog = prog
    setup_logging(args.log_level, args.log_format)
    if args.command is None:
        parser(prog).print_help()
        return EXIT_USAGE
    if args.command == "run":
        return _run(args)
    if args.command == "simulate":
        return _simulate(args)
    if args.command in (
        "status",
        "explain",
        "failover",
        "failback",
        "approve",
        "pin",
        "unpin",
        "replication",
        "drill",
    ):
        return _app_command(args)
    return EXIT_USAGE  # pragma: no cover - argparse rejects unknown commands


def _commands(top: argparse.ArgumentParser) -> tuple[str, ...]:
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            return tuple(action.choices)
    return ()


def _run(args: argparse.Namespace) -> int:
    from controller.operator.kubeconfig import KubeConfigError
    from controller.operator.leader import LeaseTimings
    from controller.operator.peer_setup import PeerSetupError
    from controller.operator.probes import source_address_of
    from controller.operator.runner import OperatorConfig, run
    from controller.operator.shards import Shard

    try:
        LeaseTimings.for_lease(args.lease_seconds)
    except ValueError as error:
        print(f"lifeboat run: --lease-seconds: {error}", file=sys.stderr)
        return EXIT_USAGE
    if args.peer_name and not args.leader_election:
        print(
            "lifeboat run: --peer-name needs leader election (peers act on a majority of Leases)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        shard = Shard.parse(args.shard)
    except ValueError as error:
        print(f"lifeboat run: --shard: {error}", file=sys.stderr)
        return EXIT_USAGE
    if shard.sharded and args.peer_name:
        print("lifeboat run: --shard and --peer-name do not combine yet", file=sys.stderr)
        return EXIT_USAGE
    if args.probe_source_address is not None:
        try:
            source_address_of(args.probe_source_address)
        except ValueError as error:
            print(f"lifeboat run: --probe-source-address: {error}", file=sys.stderr)
            return EXIT_USAGE
    if not args.secret_recheck_seconds >= MIN_SECRET_RECHECK_SECONDS:
        print(
            f"lifeboat run: --secret-recheck-seconds must be at least "
            f"{MIN_SECRET_RECHECK_SECONDS:g}, got {args.secret_recheck_seconds:g}",
            file=sys.stderr,
        )
        return EXIT_USAGE

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
        secret_recheck_seconds=args.secret_recheck_seconds,
        event_loop=args.event_loop,
        probe_source_address=args.probe_source_address,
        peer_name=args.peer_name,
        shard=shard,
    )
    try:
        run(config)
    except (KubeConfigError, PeerSetupError) as error:
        print(f"lifeboat: {error}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _simulate(args: argparse.Namespace) -> int:
    from controller.cli.simulate import TimelineError, simulation

    try:
        result = simulation(Path(args.app), Path(args.timeline), [Path(p) for p in args.provider])
    except TimelineError as error:
        print(f"lifeboat simulate: {error}", file=sys.stderr)
        return EXIT_USAGE
    output = args.output or ("table" if sys.stdout.isatty() else "json")
    if output == "table":
        print(result.table())
    else:
        print(result.json())
        print(result.summary(), file=sys.stderr)
    return EXIT_OK


def _drill_run_usage(args: argparse.Namespace) -> str | None:
    """What is wrong with a ``drill run`` command line (None: nothing), before any cluster
    is asked."""
    if args.kind == "Switchover" and not args.to:
        return "a Switchover needs --to SITE"
    if (args.kind == "ZoneEvacuation") != bool(args.zone):
        return "--zone ZONE goes with --kind ZoneEvacuation, and only with it"
    if args.kind == "ZoneEvacuation" and args.to:
        return "a ZoneEvacuation takes --zone of the active site, not --to"
    return None


def _app_command(args: argparse.Namespace) -> int:
    from controller.cli import commands

    if args.command == "drill" and args.drill_command == "run":
        wrong = _drill_run_usage(args)
        if wrong is not None:
            print(f"{args.prog} drill run: {wrong}", file=sys.stderr)
            return EXIT_USAGE
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
                wait=ANSWER_SECONDS if args.wait is None else args.wait,
                prog=args.prog,
                planned=args.planned,
                to_the_end=args.wait is not None,
            )
        if args.command == "drill":
            return _drill(cluster, namespace, args)
        if args.command == "approve":
            return commands.approve(cluster, namespace, args.app, args.id, wait=args.wait)
        if args.command == "replication":
            return commands.unreplicated(
                cluster,
                namespace,
                args.app,
                args.action,
                args.dataset,
                wait=args.wait,
                prog=args.prog,
            )
        site = args.site if args.command == "pin" else ""
        return commands.pin(cluster, namespace, args.app, site)
    except commands.CommandError as error:
        print(f"{args.prog} {args.command}: {error}", file=sys.stderr)
        return error.code
    except BrokenPipeError:  # `... | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _drill(cluster: Any, namespace: str, args: argparse.Namespace) -> int:
    from controller.cli import drill

    if args.drill_command == "run":
        timeline, expect = None, None
        if args.kind == "Observe":
            if not args.timeline:
                print(
                    f"{args.prog} drill run: an Observe drill needs --timeline FILE",
                    file=sys.stderr,
                )
                return EXIT_USAGE
            timeline = drill.timeline_document(Path(args.timeline))
            expect = {}
            if args.within is not None:
                expect["failoverWithinSeconds"] = args.within
            if args.no_failover:
                expect["noFailover"] = True
        return drill.run(
            cluster,
            namespace,
            args.app,
            kind=args.kind,
            site=args.to,
            hold=args.hold,
            name=args.name,
            wait=args.wait,
            timeline=timeline,
            expect=expect,
            zone=args.zone,
        )
    if args.drill_command == "status":
        return drill.status(cluster, namespace, args.name, output=args.output)
    return drill.abort(cluster, namespace, args.name, wait=args.wait)


if __name__ == "__main__":
    sys.exit(main())
