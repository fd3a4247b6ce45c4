"""An envtest-style Kubernetes control plane: a real etcd and kube-apiserver.

There is no kubelet, scheduler or controller-manager: objects are stored,
validated, admitted and authorised exactly as in a real cluster, but nothing
runs them. That is what an operator's tests and the sandbox demo need.

Everything lives in a private temporary directory: the PKI (a CA, the
apiserver serving certificate, an admin client certificate in
``system:masters``, the service-account signing key pair), etcd's data, the
process logs and the admin kubeconfig. Only loopback addresses are used.

The processes never outlive the Python process: ``stop()`` ends them, an
``atexit`` hook covers a forgotten ``stop()``, and on Linux they receive
SIGKILL when their parent dies, even by SIGKILL (see
``sandbox.procs.ChildProcess``).

Typical use::

    with KubeControlPlane(ensure_assets()) as kube:
        kube.install_crds([Path("manifests/crds")])
        kube.kubectl("get", "namespaces")
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ipaddress
import json
import logging
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import kubernetes.client
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sandbox.assets import Assets
from sandbox.procs import ChildProcess, Service

LOOPBACK = "127.0.0.1"
ADMIN_USER = "lifeboat-sandbox-admin"
ADMIN_GROUP = "system:masters"
CLUSTER_NAME = "lifeboat-sandbox"
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"  # virtual: allocated to Services, never routed
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
FIELD_MANAGER = "lifeboat-sandbox"

_ETCD_QUOTA_BYTES = 1024**3  # far above what the sandbox stores; bounds a runaway test
_STOP_GRACE_SECONDS = 10.0
_CERT_VALIDITY = timedelta(days=365)
_CLOCK_SKEW = timedelta(hours=1)

_logger = logging.getLogger(__name__)


class ControlPlaneError(RuntimeError):
    """The control plane failed to start, or is used while not running."""


class KubectlError(subprocess.CalledProcessError):
    """A kubectl command failed; the message carries its stderr."""

    def __str__(self) -> str:
        command = " ".join(str(part) for part in self.cmd)
        return f"`{command}` exited with {self.returncode}: {str(self.stderr).strip()}"


# --- PKI ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Pki:
    """Files of the sandbox PKI."""

    ca_cert: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    service_account_public_key: Path
    service_account_private_key: Path


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _certificate(
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    extensions: Iterable[tuple[x509.ExtensionType, bool]],
) -> x509.Certificate:
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + _CERT_VALIDITY)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())


def _leaf_extensions(
    ca_key: ec.EllipticCurvePrivateKey, usage: x509.ObjectIdentifier
) -> list[tuple[x509.ExtensionType, bool]]:
    return [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            True,
        ),
        (x509.ExtendedKeyUsage([usage]), False),
        (x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False),
    ]


def _ca_extensions() -> list[tuple[x509.ExtensionType, bool]]:
    return [
        (x509.BasicConstraints(ca=True, path_length=0), True),
        (
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            True,
        ),
    ]


def _private_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _write_private(path: Path, data: bytes) -> None:
    """Write a file readable by the owner only (keys, kubeconfigs with credentials)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _write_pki(directory: Path) -> _Pki:
    """Generate the CA, the serving and admin certificates and the SA key pair."""
    directory.mkdir(mode=0o700)
    pki = _Pki(
        ca_cert=directory / "ca.crt",
        serving_cert=directory / "apiserver.crt",
        serving_key=directory / "apiserver.key",
        admin_cert=directory / "admin.crt",
        admin_key=directory / "admin.key",
        service_account_public_key=directory / "sa.pub",
        service_account_private_key=directory / "sa.key",
    )
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("lifeboat-sandbox-ca")
    ca = _certificate(ca_name, ca_key.public_key(), ca_name, ca_key, _ca_extensions())
    pki.ca_cert.write_bytes(_cert_pem(ca))

    serving_key = ec.generate_private_key(ec.SECP256R1())
    serving_names = x509.SubjectAlternativeName(
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(LOOPBACK))]
    )
    serving = _certificate(
        _name("kube-apiserver"),
        serving_key.public_key(),
        ca_name,
        ca_key,
        [*_leaf_extensions(ca_key, ExtendedKeyUsageOID.SERVER_AUTH), (serving_names, False)],
    )
    pki.serving_cert.write_bytes(_cert_pem(serving))
    _write_private(pki.serving_key, _private_pem(serving_key))

    admin_key = ec.generate_private_key(ec.SECP256R1())
    admin = _certificate(
        _name(ADMIN_USER, ADMIN_GROUP),
        admin_key.public_key(),
        ca_name,
        ca_key,
        _leaf_extensions(ca_key, ExtendedKeyUsageOID.CLIENT_AUTH),
    )
    pki.admin_cert.write_bytes(_cert_pem(admin))
    _write_private(pki.admin_key, _private_pem(admin_key))

    service_account_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pki.service_account_public_key.write_bytes(
        service_account_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    _write_private(pki.service_account_private_key, _private_pem(service_account_key))
    return pki


# --- kubeconfig ---------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _write_kubeconfig(
    path: Path,
    *,
    server_url: str,
    ca_cert: Path,
    user_name: str,
    credentials: dict[str, str],
    namespace: str = "default",
) -> None:
    """Write a self-contained kubeconfig (certificates embedded) for one user."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CLUSTER_NAME,
                "cluster": {
                    "server": server_url,
                    "certificate-authority-data": _b64(ca_cert.read_bytes()),
                },
            }
        ],
        "users": [{"name": user_name, "user": credentials}],
        "contexts": [
            {
                "name": CLUSTER_NAME,
                "context": {"cluster": CLUSTER_NAME, "user": user_name, "namespace": namespace},
            }
        ],
        "current-context": CLUSTER_NAME,
        "preferences": {},
    }
    _write_private(path, yaml.safe_dump(config, sort_keys=False).encode("utf-8"))


# --- processes ----------------------------------------------------------------


def _free_loopback_ports(count: int) -> list[int]:
    """Ports the kernel considers free right now, all distinct."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind((LOOPBACK, 0))
        return [sock.getsockname()[1] for sock in sockets]


def _etcd_command(etcd: Path, data_dir: Path, client_port: int, peer_port: int) -> list[str]:
    client_url = f"http://{LOOPBACK}:{client_port}"
    peer_url = f"http://{LOOPBACK}:{peer_port}"
    return [
        str(etcd),
        "--name=sandbox",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client_url}",
        f"--advertise-client-urls={client_url}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=sandbox={peer_url}",
        "--initial-cluster-state=new",
        "--unsafe-no-fsync",  # throw-away data: durability is not worth the latency
        f"--quota-backend-bytes={_ETCD_QUOTA_BYTES}",
    ]


def _apiserver_command(apiserver: Path, pki: _Pki, port: int, etcd_client_port: int) -> list[str]:
    return [
        str(apiserver),
        f"--etcd-servers=http://{LOOPBACK}:{etcd_client_port}",
        f"--bind-address={LOOPBACK}",
        f"--advertise-address={LOOPBACK}",
        f"--secure-port={port}",
        f"--tls-cert-file={pki.serving_cert}",
        f"--tls-private-key-file={pki.serving_key}",
        f"--client-ca-file={pki.ca_cert}",
        "--authorization-mode=RBAC",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        f"--service-account-key-file={pki.service_account_public_key}",
        f"--service-account-signing-key-file={pki.service_account_private_key}",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        "--allow-privileged=true",
        # No controller-manager creates the "default" ServiceAccount of each
        # namespace, which this admission plugin would demand of every Pod.
        "--disable-admission-plugins=ServiceAccount",
        # There are no pods to reach the apiserver: do not maintain endpoints
        # (which would point at loopback) for the "kubernetes" Service.
        "--endpoint-reconciler-type=none",
        "--profiling=false",
    ]


# --- the control plane ----------------------------------------------------------


@dataclass(frozen=True)
class _Endpoint:
    """What clients need once the apiserver is ready."""

    server_url: str
    version: str
    kubeconfig_path: Path
    pki: _Pki


class KubeControlPlane(Service):
    """etcd + kube-apiserver on loopback ports, with an admin identity.

    ``start()``/``stop()`` or use as a context manager. Start it from a
    long-lived thread, normally the main one: Linux kills the processes when
    the thread that started them ends. ``keep=True`` leaves the
    working directory (PKI, logs, etcd data, kubeconfig) behind on stop.
    """

    ready_poll_seconds = 0.2

    def __init__(
        self, assets: Assets, *, keep: bool = False, startup_timeout: float = 90.0
    ) -> None:
        super().__init__("kube control plane")
        self._assets = assets
        self._keep = keep
        self._startup_timeout = startup_timeout
        self._workdir: Path | None = None
        self._processes: list[ChildProcess] = []
        self._endpoint: _Endpoint | None = None

    # lifecycle

    def _start(self) -> None:
        """Start etcd and kube-apiserver and wait until the apiserver is ready."""
        started = time.monotonic()
        self._workdir = Path(tempfile.mkdtemp(prefix="lifeboat-kube-"))
        atexit.register(self.stop)
        self._endpoint = self._boot(self._workdir)
        _logger.info(
            "kube-apiserver %s ready at %s in %.1fs (workdir %s)",
            self._endpoint.version,
            self._endpoint.server_url,
            time.monotonic() - started,
            self._workdir,
        )

    def _stop(self) -> None:
        """Stop the processes and, unless ``keep``, delete the working directory."""
        for process in reversed(self._processes):
            process.stop()
        self._processes = []
        self._endpoint = None
        if self._workdir is not None and not self._keep:
            shutil.rmtree(self._workdir, ignore_errors=True)
        self._workdir = None
        atexit.unregister(self.stop)

    def kill(self) -> None:
        """SIGKILL kube-apiserver and etcd, as when their machine dies (the working directory
        stays until :meth:`stop`, which must still be called)."""
        for process in reversed(self._processes):
            process.kill()

    def pause(self) -> None:
        """Freeze kube-apiserver (SIGSTOP): connections are accepted, nothing answers."""
        self._apiserver().pause()

    def resume(self) -> None:
        """Thaw kube-apiserver after :meth:`pause`."""
        self._apiserver().resume()

    @property
    def alive(self) -> bool:
        """Started, and neither process has ended."""
        return bool(self._processes) and all(p.exit_code() is None for p in self._processes)

    def _apiserver(self) -> ChildProcess:
        for process in self._processes:
            if process.name == "kube-apiserver":
                return process
        raise ControlPlaneError("the control plane is not running; call start() first")

    # properties

    @property
    def server_url(self) -> str:
        """``https://127.0.0.1:<port>`` of the apiserver."""
        return self._running().server_url

    @property
    def kubeconfig_path(self) -> Path:
        """Kubeconfig of the admin user (``system:masters``), certificates embedded."""
        return self._running().kubeconfig_path

    @property
    def ca_path(self) -> Path:
        """PEM of the CA that signed the serving and client certificates."""
        return self._running().pki.ca_cert

    @property
    def version(self) -> str:
        """``gitVersion`` reported by the apiserver's ``/version``, e.g. ``v1.36.3``."""
        return self._running().version

    @property
    def workdir(self) -> Path:
        """The working directory: PKI, etcd data, ``*.log`` files, kubeconfig."""
        self._running()
        assert self._workdir is not None
        return self._workdir

    # clients

    def api_client(self) -> kubernetes.client.ApiClient:
        """A Kubernetes API client authenticated as the admin. Close it after use."""
        endpoint = self._running()
        configuration = kubernetes.client.Configuration()
        configuration.host = endpoint.server_url
        configuration.ssl_ca_cert = str(endpoint.pki.ca_cert)
        configuration.cert_file = str(endpoint.pki.admin_cert)
        configuration.key_file = str(endpoint.pki.admin_key)
        return kubernetes.client.ApiClient(configuration)

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl as the admin (or with ``kubeconfig``), capturing its output.

        With ``check`` a non-zero exit raises KubectlError, whose message
        includes kubectl's stderr.
        """
        self._running()
        assert self._workdir is not None
        command = [
            str(self._assets.kubectl),
            f"--kubeconfig={kubeconfig or self.kubeconfig_path}",
            f"--cache-dir={self._workdir / 'kubectl-cache'}",
            *args,
        ]
        result = subprocess.run(
            command, input=input, capture_output=True, text=True, check=False, timeout=timeout
        )
        if check and result.returncode != 0:
            raise KubectlError(result.returncode, command, result.stdout, result.stderr)
        return result

    def install_crds(self, paths: Iterable[Path], *, timeout: float = 60.0) -> None:
        """Server-side apply CRD manifests (files or directories); wait until Established."""
        files = [f"--filename={path}" for path in paths]
        if not files:
            return
        applied = self.kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            f"--field-manager={FIELD_MANAGER}",
            "--output=name",
            *files,
        )
        crds = [
            name
            for name in applied.stdout.split()
            if name.startswith("customresourcedefinition.apiextensions.k8s.io/")
        ]
        if not crds:
            return
        deadline = time.monotonic() + timeout
        while True:
            # A CRD created a moment ago may have no status.conditions yet: kubectl wait then
            # fails at once ("accessor error") instead of waiting. Ask again until it has.
            waited = self.kubectl(
                "wait",
                "--for=condition=Established",
                f"--timeout={max(1.0, deadline - time.monotonic()):.0f}s",
                *crds,
                check=False,
            )
            if waited.returncode == 0:
                return
            if "accessor error" not in waited.stderr or time.monotonic() > deadline:
                raise KubectlError(
                    waited.returncode, list(waited.args), waited.stdout, waited.stderr
                )
            time.sleep(0.2)

    def service_account_kubeconfig(
        self, namespace: str, name: str, path: Path, *, expiration_seconds: int = 3600
    ) -> Path:
        """Write a kubeconfig that authenticates as a ServiceAccount's bearer token.

        The namespace and ServiceAccount are created if missing; the token
        comes from the TokenRequest API (the apiserver refuses expirations
        under 600 seconds). Returns ``path``.
        """
        manifests = {
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
                {
                    "apiVersion": "v1",
                    "kind": "ServiceAccount",
                    "metadata": {"name": name, "namespace": namespace},
                },
            ],
        }
        self.kubectl(
            "apply",
            "--server-side",
            f"--field-manager={FIELD_MANAGER}",
            "--filename=-",
            input=json.dumps(manifests),
        )
        token = self.kubectl(
            "create", "token", name, f"--namespace={namespace}", f"--duration={expiration_seconds}s"
        ).stdout.strip()
        _write_kubeconfig(
            path,
            server_url=self.server_url,
            ca_cert=self.ca_path,
            user_name=f"system:serviceaccount:{namespace}:{name}",
            credentials={"token": token},
            namespace=namespace,
        )
        return path

    # internals

    def _running(self) -> _Endpoint:
        if self._endpoint is None:
            raise ControlPlaneError("the control plane is not running; call start() first")
        return self._endpoint

    def _boot(self, workdir: Path) -> _Endpoint:
        pki = _write_pki(workdir / "pki")
        etcd_client_port, etcd_peer_port, apiserver_port = _free_loopback_ports(3)
        deadline = time.monotonic() + self._startup_timeout

        self._spawn(
            "etcd",
            _etcd_command(self._assets.etcd, workdir / "etcd", etcd_client_port, etcd_peer_port),
        )
        plain = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._await_ready(
            lambda: _etcd_health(plain, etcd_client_port),
            what="etcd to become healthy",
            deadline=deadline,
            children=self._processes,
        )

        self._spawn(
            "kube-apiserver",
            _apiserver_command(self._assets.kube_apiserver, pki, apiserver_port, etcd_client_port),
        )
        server_url = f"https://{LOOPBACK}:{apiserver_port}"
        admin = _admin_opener(pki)
        self._await_ready(
            lambda: _readyz(admin, server_url),
            what="kube-apiserver to become ready",
            deadline=deadline,
            children=self._processes,
        )

        with admin.open(f"{server_url}/version", timeout=5) as response:
            version = str(json.load(response)["gitVersion"])
        kubeconfig_path = workdir / "admin.kubeconfig"
        _write_kubeconfig(
            kubeconfig_path,
            server_url=server_url,
            ca_cert=pki.ca_cert,
            user_name=ADMIN_USER,
            credentials={
                "client-certificate-data": _b64(pki.admin_cert.read_bytes()),
                "client-key-data": _b64(pki.admin_key.read_bytes()),
            },
        )
        return _Endpoint(
            server_url=server_url, version=version, kubeconfig_path=kubeconfig_path, pki=pki
        )

    def _spawn(self, name: str, argv: list[str]) -> None:
        assert self._workdir is not None
        process = ChildProcess(
            argv,
            log_path=self._workdir / f"{name}.log",
            name=name,
            stop_grace=_STOP_GRACE_SECONDS,
        )
        self._processes.append(process)
        process.start()

    def _startup_error(self, message: str, exited: ChildProcess | None) -> Exception:
        hint = "" if self._keep else "\n(the working directory is removed; keep=True preserves it)"
        return ControlPlaneError(f"{message}{hint}")


def _admin_opener(pki: _Pki) -> urllib.request.OpenerDirector:
    """An HTTPS opener that trusts the sandbox CA and presents the admin certificate."""
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    context.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
    return urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )


def _probe(opener: urllib.request.OpenerDirector, url: str) -> tuple[int, str]:
    """GET ``url``: (status, body), or (0, error) when there is no HTTP answer."""
    try:
        with opener.open(url, timeout=2) as response:
            return response.status, response.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode("utf-8", errors="replace")
    except OSError as error:  # includes URLError: refused, reset, TLS, timeout
        return 0, str(error)


def _etcd_health(opener: urllib.request.OpenerDirector, client_port: int) -> str | None:
    status, body = _probe(opener, f"http://{LOOPBACK}:{client_port}/health")
    if status == 200 and json.loads(body).get("health") == "true":
        return None
    return body.strip() or f"HTTP {status}"


def _readyz(opener: urllib.request.OpenerDirector, server_url: str) -> str | None:
    status, body = _probe(opener, f"{server_url}/readyz?verbose")
    if status == 200:
        return None
    failing = [line for line in body.splitlines() if line.startswith("[-]")]
    return "; ".join(failing) or body.strip() or f"HTTP {status}"
