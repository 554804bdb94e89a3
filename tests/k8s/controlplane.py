"""A real Kubernetes control plane on loopback, for the tests that must talk to a real API server.

etcd, kube-apiserver (RBAC, the default admission plugins plus OwnerReferencesPermissionEnforcement),
kube-controller-manager (garbage collection, Deployments, Jobs), kube-scheduler and kwok (a fake node
whose Pods run, become ready and complete without containers), built by ``tools/kube/build.sh`` from
the Go module proxy and started here with certificates made by openssl. Everything stops on exit,
also on failure.

    python -m tests.k8s.controlplane up [--node]   # in the foreground; prints KUBECONFIG; Ctrl-C stops it
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from streamtrain.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "tools/kube/build.sh"
K8S_VERSION = os.environ.get("K8S_VERSION", "v1.35.4")
#: Admission plugins on top of the server's defaults: OpenShift enables this one, and it needs the
#: operator to hold ``<plural>/finalizers: update`` to set blockOwnerDeletion on its children.
EXTRA_ADMISSION = "OwnerReferencesPermissionEnforcement"
FAKE_NODE = "kwok-node-0"
#: Service addresses (ClusterIPs); a real node (node.py) routes what kube-proxy does not translate nowhere.
SERVICE_CIDR = "10.96.0.0/16"


def build(node: bool = False, check: bool = False, registry: bool = False) -> Path:
    """Build (once, cached) and return the folder of the binaries.

    With ``check`` nothing is built: the test fixtures run under pytest's per-test timeout, which a
    cold build (about 10 minutes) outlasts, so they only check and name the make target that builds.
    """
    flags = [*(["--node"] if node else []), *(["--registry"] if registry else []), *(["--check"] if check else [])]
    args = ["bash", str(BUILD), *flags]
    env = {**os.environ, "K8S_VERSION": K8S_VERSION}
    if check:
        out = subprocess.run(args, text=True, capture_output=True, env=env, check=False)
        if out.returncode != 0:
            raise RuntimeError(out.stderr.strip() or f"{BUILD} --check exited {out.returncode}")
    else:
        out = subprocess.run(args, check=True, text=True, stdout=subprocess.PIPE, env=env)
    return Path(out.stdout.strip().splitlines()[-1])


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(d: Path) -> None:
    """CA, API server serving cert, admin client cert (system:masters), service-account key pair."""
    d.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=streamtrain-test-ca",
        cwd=d,
    )
    sans = (
        "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
        "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    )
    for name, subject, ext in (
        ("apiserver", "/CN=kube-apiserver", sans),
        ("admin", "/O=system:masters/CN=admin", None),
    ):
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            subject,
            cwd=d,
        )
        extfile = d / f"{name}.ext"
        extfile.write_text((ext or "basicConstraints=CA:FALSE") + "\n")
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.crt",
            "-days",
            "2",
            "-extfile",
            extfile.name,
            cwd=d,
        )
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=d)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)


def kubeconfig(
    server: str, pki: Path, user: str = "admin", token: str | None = None, namespace: str = "default"
) -> str:
    cred = (
        {"token": token}
        if token
        else {"client-certificate": str(pki / "admin.crt"), "client-key": str(pki / "admin.key")}
    )
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": server, "certificate-authority": str(pki / "ca.crt")}}],
            "users": [{"name": user, "user": cred}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": user, "namespace": namespace}}],
        }
    )


@dataclass
class ControlPlane:
    """One running control plane; ``kubectl(...)`` and ``kubeconfig`` point at it as admin."""

    workdir: Path
    bin: Path
    port: int = 0
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    @property
    def pki(self) -> Path:
        return self.workdir / "pki"

    def env(self) -> dict[str, str]:
        """Environment for kubectl/helm/the operator as admin on this cluster (nothing of the host's)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
        env.update(
            KUBECONFIG=str(self.kubeconfig),
            PATH=f"{self.bin}:{env.get('PATH', '')}",
            HELM_CACHE_HOME=str(self.workdir / "helm/cache"),
            HELM_CONFIG_HOME=str(self.workdir / "helm/config"),
            HELM_DATA_HOME=str(self.workdir / "helm/data"),
        )
        return env

    def patch_spec(self, namespace: str, name: str, spec: dict) -> subprocess.CompletedProcess:
        """Merge-patch a StreamingTraining's spec, as `kubectl patch --type=merge` by a user."""
        body = json.dumps({"spec": spec})
        return self.kubectl("patch", "streamingtraining", name, "-n", namespace, "--type=merge", "-p", body)

    def get_object(self, kind: str, name: str, namespace: str, *flags: str) -> dict | None:
        """One object as JSON, or None when it does not exist (or cannot be read)."""
        res = self.kubectl("get", kind, name, "-n", namespace, "-o", "json", *flags, check=False)
        return json.loads(res.stdout) if res.returncode == 0 else None

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, kubeconfig: Path | None = None
    ) -> subprocess.CompletedProcess:
        env = self.env()
        if kubeconfig:
            env["KUBECONFIG"] = str(kubeconfig)
        res = subprocess.run(
            [str(self.bin / "kubectl"), *args], env=env, input=input, text=True, capture_output=True, timeout=120
        )
        if check and res.returncode:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({res.returncode}): {res.stderr.strip()}")
        return res

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        res = subprocess.run(
            [str(self.bin / "helm"), *args], env=self.env(), text=True, capture_output=True, timeout=600
        )
        if check and res.returncode:
            raise AssertionError(f"helm {' '.join(args)} failed ({res.returncode}): {res.stderr.strip()}")
        return res

    def _start(self, name: str, *args: str) -> None:
        log = open(self.workdir / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(
            [str(self.bin / name), *args], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def _ready(self, deadline: float) -> None:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        end = time.monotonic() + deadline
        last: object = None
        while time.monotonic() < end:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    tail = (self.workdir / f"{name}.log").read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")
            try:
                with urllib.request.urlopen(f"{self.server}/readyz", context=ctx, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError as exc:
                last = exc
            time.sleep(0.2)
        raise RuntimeError(f"kube-apiserver not ready in {deadline:.0f} s: {last}")

    def up(self, deadline: float = 120.0) -> ControlPlane:
        make_pki(self.pki)
        etcd_port, etcd_peer = free_port(), free_port()
        self.port = free_port()
        self.kubeconfig.write_text(kubeconfig(self.server, self.pki))
        self._start(
            "etcd",
            "--data-dir",
            str(self.workdir / "etcd"),
            "--name",
            "test",
            "--listen-client-urls",
            f"http://127.0.0.1:{etcd_port}",
            "--advertise-client-urls",
            f"http://127.0.0.1:{etcd_port}",
            "--listen-peer-urls",
            f"http://127.0.0.1:{etcd_peer}",
            "--initial-advertise-peer-urls",
            f"http://127.0.0.1:{etcd_peer}",
            "--initial-cluster",
            f"test=http://127.0.0.1:{etcd_peer}",
            "--unsafe-no-fsync",
            "--log-level",
            "warn",
        )
        pki = self.pki
        self._start(
            "kube-apiserver",
            "--etcd-servers",
            f"http://127.0.0.1:{etcd_port}",
            "--bind-address",
            "127.0.0.1",
            "--advertise-address",
            "127.0.0.1",
            "--secure-port",
            str(self.port),
            "--client-ca-file",
            str(pki / "ca.crt"),
            "--tls-cert-file",
            str(pki / "apiserver.crt"),
            "--tls-private-key-file",
            str(pki / "apiserver.key"),
            "--service-account-key-file",
            str(pki / "sa.pub"),
            "--service-account-signing-key-file",
            str(pki / "sa.key"),
            "--service-account-issuer",
            "https://kubernetes.default.svc.cluster.local",
            "--service-cluster-ip-range",
            SERVICE_CIDR,
            "--authorization-mode",
            "RBAC",
            "--enable-admission-plugins",
            EXTRA_ADMISSION,
            "--allow-privileged=true",
            "--endpoint-reconciler-type",
            "none",
            # A real node (node.py) is reached at its address: its name resolves nowhere here.
            "--kubelet-preferred-address-types",
            "InternalIP,Hostname",
            "-v",
            "1",
        )
        self._ready(deadline)
        kc = str(self.kubeconfig)
        self._start(
            "kube-controller-manager",
            "--kubeconfig",
            kc,
            "--leader-elect=false",
            "--secure-port",
            str(free_port()),
            "--bind-address",
            "127.0.0.1",
            "--service-account-private-key-file",
            str(pki / "sa.key"),
            "--root-ca-file",
            str(pki / "ca.crt"),
            "--cluster-signing-cert-file",
            str(pki / "ca.crt"),
            "--cluster-signing-key-file",
            str(pki / "ca.key"),
            "--use-service-account-credentials=false",
            "-v",
            "1",
        )
        self._start(
            "kube-scheduler",
            "--kubeconfig",
            kc,
            "--leader-elect=false",
            "--secure-port",
            str(free_port()),
            "--bind-address",
            "127.0.0.1",
            "-v",
            "1",
        )
        self._start_kwok()
        return self

    def _start_kwok(self) -> None:
        stages = self.bin.parent / "kwok-stages"
        configs = [
            p
            for sub in ("node/fast", "node/heartbeat-with-lease", "pod/fast")
            for p in sorted((stages / sub).glob("*.yaml"))
            if p.name != "kustomization.yaml"
        ]
        configs += sorted((Path(__file__).parent / "kwok").glob("*.yaml"))
        args = [
            "--kubeconfig",
            str(self.kubeconfig),
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            "--node-ip",
            "127.0.0.1",
            "--server-address",
            f"127.0.0.1:{free_port()}",
            # The node's heartbeat is a Lease renewed every 10 s, as a kubelet's. kwok's own default is
            # no lease: the stage then reports the node's status every ~55 s, past the controller-manager's
            # 50 s grace, so the node went NotReady each time and every Pod on it was marked not ready for good
            # (kwok readies Pending Pods only).
            "--node-lease-duration-seconds",
            "40",
        ]
        for c in configs:
            args += ["--config", str(c)]
        self._start("kwok", *args)
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": FAKE_NODE,
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {"kubernetes.io/hostname": FAKE_NODE, "kubernetes.io/os": "linux", "type": "kwok"},
            },
            "status": {
                "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "500"},
                "capacity": {"cpu": "64", "memory": "256Gi", "pods": "500"},
            },
        }
        self.kubectl("apply", "-f", "-", input=json.dumps(node))
        # Schedulable once kwok reports it Ready and the node-lifecycle controller lifts the not-ready taint.
        end = time.monotonic() + 60
        while self.kubectl("get", "node", FAKE_NODE, "-o", "jsonpath={.spec.taints}").stdout.strip():
            if time.monotonic() > end:
                raise RuntimeError(f"{FAKE_NODE} still tainted after 60 s:\n{self.logs('kwok')}")
            time.sleep(0.5)

    def down(self) -> None:
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        self.procs.clear()

    def logs(self, name: str, tail: int = 4000) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""

    def describe(self, namespace: str, tail: int = 3000) -> str:
        """What a failed wait needs to be explained: the namespace's workloads, Pods and Events, the
        nodes with their taints, conditions and leases, which components still run, and the ends of
        the controller-manager's, scheduler's and kwok's logs."""
        out = []
        for args in (
            ("get", "deployments,replicasets,pods,pdb", "-n", namespace, "-o", "wide"),
            ("get", "events", "-n", namespace, "--sort-by=.lastTimestamp"),
            (
                "get",
                "nodes",
                "-o",
                "custom-columns=NAME:.metadata.name,TAINTS:.spec.taints,"
                "CONDITIONS:.status.conditions[*].type,STATUS:.status.conditions[*].status",
            ),
            (
                "get",
                "leases",
                "-n",
                "kube-node-lease",
                "-o",
                "custom-columns=NAME:.metadata.name,HOLDER:.spec.holderIdentity,RENEWED:.spec.renewTime",
            ),
        ):
            res = self.kubectl(*args, check=False)
            out.append(f"$ kubectl {' '.join(args)}\n{res.stdout}{res.stderr}")
        out.append(
            "components: "
            + ", ".join(
                f"{n} {'running' if p.poll() is None else f'exited {p.returncode}'}" for n, p in self.procs.items()
            )
        )
        for name in ("kube-controller-manager", "kube-scheduler", "kwok"):
            out.append(f"--- {name} (last {tail} characters)\n{self.logs(name, tail)}")
        return "\n".join(out)


@contextlib.contextmanager
def running(workdir: Path | None = None, node: bool = False, build_missing: bool = True):
    """A started control plane, stopped (and its temporary folder removed) on exit, also on failure.

    ``build_missing=False`` (the test fixtures) refuses to start when the binaries are not built.
    """
    binaries = build(node=node, check=not build_missing)
    own = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="streamtrain-kube-")) if own else workdir
    cp = ControlPlane(workdir=workdir, bin=binaries)
    try:
        yield cp.up()
    finally:
        cp.down()
        if own:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.k8s.controlplane",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=["up", "build"], help="up: start and wait for Ctrl-C; build: only build")
    parser.add_argument("--dir", type=Path, help="working folder (default: a temporary one, removed at the end)")
    parser.add_argument(
        "--node",
        action="store_true",
        help="also a real node: build the kubelet, kube-proxy, CoreDNS, crictl; with up, start it "
        "(root; tests/k8s/node.py)",
    )
    args = parser.parse_args(argv)
    if args.command == "build":
        print(build(node=args.node))
        return 0
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    with contextlib.ExitStack() as stack:
        cp = stack.enter_context(running(args.dir, node=args.node))
        if args.node:
            from tests.k8s import node  # noqa: PLC0415 - node.py builds on this module

            stack.enter_context(node.running(cp))
        print(
            f"control plane {K8S_VERSION}{' and a real node' if args.node else ''} ready at {cp.server}\n"
            f"export KUBECONFIG={cp.kubeconfig}\nexport PATH={cp.bin}:$PATH",
            flush=True,
        )
        try:
            while not stop["now"]:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    print("stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
