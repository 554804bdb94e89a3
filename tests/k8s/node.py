"""A real node for the real control plane: containerd + runc + a bridge CNI + a kubelet, on this machine.

containerd (Debian's, own root/state/socket under the node's folder, runc with the cgroupfs driver) runs
the Pods; the images come from OCI archives (``make images-export``) imported into its ``k8s.io``
namespace, so nothing is ever pulled. Pods get addresses on their own bridge (Debian's
containernetworking-plugins: bridge + host-local + portmap + firewall); the bridge's gateway address
is also where this machine's services for the Pods listen (the node's InternalIP, the local Kafka and
HiveMQ), since the Pods cannot see the machine's loopback. The kubelet (``tools/kube/build.sh --node``)
authenticates with a node client certificate (``system:node:<name>``, group ``system:nodes``).

Needs root (cgroups, mounts, network namespaces). Only one node per machine: the bridge, its subnet
and the cgroup root are fixed names. Everything stops on exit, also on failure; Pods are stopped
through the CRI (``crictl``) so their network namespaces and addresses are released.

    python -m tests.k8s.controlplane up --node    # control plane + node in the foreground; Ctrl-C stops both
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from streamtrain.ports import free_port
from tests.k8s.controlplane import SERVICE_CIDR, ControlPlane, _openssl, kubeconfig
from tests.k8s.node_config import (
    ARCHIVES,
    BRIDGE,
    CGROUP_ROOT,
    CLUSTER_DOMAIN,
    CONTAINERD_ROOT,
    GATEWAY,
    IMAGES,
    NODE_NAME,
    PACKAGES,
    SUBNET,
    cni_config,
    containerd_config,
    kubelet_config,
    registry_hosts,
)
from tests.programs import stop_group


def ensure_packages() -> None:
    missing = [p for p, path in PACKAGES.items() if not Path(path).exists()]
    if missing:
        subprocess.run(["apt-get", "update", "-q"], check=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
            check=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if check and res.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip()}")
    return res


#: iptables chains the kubelet (localnet guard, canaries) and the CNI firewall plugin leave behind;
#: kube-proxy removes its own with --cleanup.
LEFT_CHAINS = ("KUBE-FIREWALL", "KUBE-KUBELET-CANARY", "KUBE-IPTABLES-HINT", "CNI-FORWARD", "CNI-ADMIN")


def drop_chains(tool: str, chains: tuple[str, ...]) -> None:
    """Remove the rules that jump to ``chains`` and then the chains, in every table."""
    for table in ("filter", "nat", "mangle"):
        res = _run(tool, "-t", table, "-S", check=False)
        if res.returncode:
            continue
        rules = [shlex.split(line) for line in res.stdout.splitlines()]
        for rule in rules:
            if rule[0] == "-A" and rule[1] not in chains and "-j" in rule and rule[rule.index("-j") + 1] in chains:
                _run(tool, "-t", table, "-D", *rule[1:], check=False)
        for rule in rules:
            if rule[0] == "-N" and rule[1] in chains:
                _run(tool, "-t", table, "-F", rule[1], check=False)
        for rule in rules:
            if rule[0] == "-N" and rule[1] in chains:
                _run(tool, "-t", table, "-X", rule[1], check=False)


def _listening(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


@dataclass
class Node:
    """One kubelet on containerd, registered with ``cp`` as ``name``."""

    cp: ControlPlane
    workdir: Path
    name: str = NODE_NAME
    root: Path = CONTAINERD_ROOT
    #: OCI archives imported before the first Pod (the rest is pulled from ``registries``).
    archives: tuple[str, ...] = ARCHIVES
    #: Registries (host:port) containerd pulls from over plain HTTP, e.g. one on loopback.
    registries: tuple[str, ...] = ()
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def socket(self) -> str:
        return str(self.workdir / "containerd/containerd.sock")

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return _run("ctr", "--address", self.socket, "--namespace", "k8s.io", *args, check=check)

    def crictl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return _run(
            str(self.cp.bin / "crictl"),
            "--runtime-endpoint",
            f"unix://{self.socket}",
            "--timeout",
            "60s",
            *args,
            check=check,
        )

    def _start(self, name: str, *cmd: str) -> None:
        log = open(self.workdir / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def logs(self, name: str, tail: int = 4000) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""

    def _alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.logs(name)}")

    def _wait(self, what: str, check, deadline: float) -> None:
        end = time.monotonic() + deadline
        while not check():
            self._alive()
            if time.monotonic() > end:
                raise RuntimeError(f"{what} not ready in {deadline:.0f} s")
            time.sleep(0.3)

    # --- steps ---------------------------------------------------------------------------------

    def bridge(self) -> None:
        """The Pods' bridge with its gateway address, made before the first Pod so that services for
        the Pods (and the kubelet) can listen on the gateway from the start."""
        if _run("ip", "link", "show", BRIDGE, check=False).returncode:
            _run("ip", "link", "add", BRIDGE, "type", "bridge")
        if GATEWAY not in _run("ip", "-4", "-o", "addr", "show", "dev", BRIDGE).stdout:
            _run("ip", "addr", "add", f"{GATEWAY}/{SUBNET.split('/')[1]}", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")
        # A Service address kube-proxy has not translated (yet) must fail at once, never leave the
        # machine: here the default route ends at an HTTP proxy, whose answer the bridge once read as MQTT.
        _run("ip", "route", "replace", "unreachable", SERVICE_CIDR)

    def containerd(self) -> None:
        d = self.workdir / "containerd"
        (d / "cni").mkdir(parents=True, exist_ok=True)
        (d / "cni/10-streamtrain.conflist").write_text(json.dumps(cni_config(d / "ipam"), indent=1))
        self.root.mkdir(parents=True, exist_ok=True)
        (d / "config.toml").write_text(containerd_config(d, self.root))
        for address in self.registries:
            (d / "certs.d" / address).mkdir(parents=True, exist_ok=True)
            (d / "certs.d" / address / "hosts.toml").write_text(registry_hosts(address))
        self._start("containerd", "/usr/bin/containerd", "--config", str(d / "config.toml"), "--log-level", "warn")
        self._wait("containerd", lambda: self.ctr("version", check=False).returncode == 0, 60)

    def import_images(self) -> None:
        """Each archive once: containerd's root (images, unpacked layers) is kept in the project's cache,
        and an archive is imported again only when it changed (a stamp of its size and mtime)."""
        missing = [a for a in self.archives if not (IMAGES / f"{a}.tar").exists()]
        if missing:
            raise RuntimeError(
                f"image archives {missing} missing in {IMAGES}: run `make images-export` "
                "(or `make images` on a clean machine)"
            )
        for a in self.archives:
            archive, stamp = IMAGES / f"{a}.tar", self.root / f"imported-{a}"
            mark = f"{archive.stat().st_size} {archive.stat().st_mtime_ns}"
            if stamp.exists() and stamp.read_text() == mark:
                continue
            self.ctr("images", "import", str(archive))
            stamp.write_text(mark)

    def images(self) -> set[str]:
        return {line.split()[0] for line in self.ctr("images", "ls").stdout.splitlines()[1:] if line.strip()}

    def credentials(self, user: str, group: str | None = None, role: str | None = None) -> Path:
        """A kubeconfig with a client certificate for ``user`` (in ``group``), signed by the cluster's CA,
        and ``role`` (a ClusterRole) bound to it when given."""
        pki, stem = self.cp.pki, user.replace(":", "-")
        subject = (f"/O={group}" if group else "") + f"/CN={user}"
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{stem}.key",
            "-out",
            f"{stem}.csr",
            "-subj",
            subject,
            cwd=pki,
        )
        (pki / f"{stem}.ext").write_text("basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{stem}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{stem}.crt",
            "-days",
            "2",
            "-extfile",
            f"{stem}.ext",
            cwd=pki,
        )
        if role:
            self.cp.kubectl(
                "apply",
                "-f",
                "-",
                input=json.dumps(
                    {
                        "apiVersion": "rbac.authorization.k8s.io/v1",
                        "kind": "ClusterRoleBinding",
                        "metadata": {"name": f"streamtrain-test-{stem}"},
                        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
                    }
                ),
            )
        cfg = yaml.safe_load(kubeconfig(self.cp.server, pki, user=user))
        cfg["users"][0]["user"] = {
            "client-certificate": str(pki / f"{stem}.crt"),
            "client-key": str(pki / f"{stem}.key"),
        }
        path = self.workdir / f"{stem}.kubeconfig"
        path.write_text(yaml.safe_dump(cfg))
        return path

    def kubelet(self) -> None:
        d = self.workdir / "kubelet"
        d.mkdir(parents=True, exist_ok=True)
        for ctl in ("cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "devices", "freezer", "systemd"):
            Path(f"/sys/fs/cgroup/{ctl}{CGROUP_ROOT}").mkdir(exist_ok=True)
        config = d / "config.yaml"
        config.write_text(
            yaml.safe_dump(kubelet_config(d, self.socket, self.cp.pki / "ca.crt", free_port(), free_port()))
        )
        self._start(
            "kubelet",
            str(self.cp.bin / "kubelet"),
            "--config",
            str(config),
            # The built-in system:node role: the control plane authorizes with RBAC alone.
            "--kubeconfig",
            str(self.credentials(f"system:node:{self.name}", "system:nodes", "system:node")),
            "--root-dir",
            str(d / "root"),
            "--cert-dir",
            str(d / "pki"),
            "--hostname-override",
            self.name,
            "--node-ip",
            GATEWAY,
            "--node-labels",
            "streamtrain.io/test-node=true",
            "-v",
            "1",
        )
        self._wait(f"node {self.name}", self.ready, 120)

    def kube_proxy(self) -> None:
        """Service addresses (iptables mode) for the Pods and this machine. system:kube-proxy is bound
        to system:node-proxier by the API server's own defaults. Conntrack sysctls are left alone."""
        self._start(
            "kube-proxy",
            str(self.cp.bin / "kube-proxy"),
            "--kubeconfig",
            str(self.credentials("system:kube-proxy")),
            "--hostname-override",
            self.name,
            "--proxy-mode",
            "iptables",
            "--cluster-cidr",
            SUBNET,
            "--metrics-bind-address",
            f"127.0.0.1:{free_port()}",
            "--healthz-bind-address",
            f"127.0.0.1:{free_port()}",
            "--conntrack-max-per-core",
            "0",
            "--conntrack-tcp-timeout-established",
            "0",
            "--conntrack-tcp-timeout-close-wait",
            "0",
            "--iptables-localhost-nodeports=false",
            "-v",
            "1",
        )

    def dns(self) -> None:
        """CoreDNS on the gateway: Service and Pod names of cluster.local from the API server, the
        rest forwarded to this machine's resolvers. Read-only rights of its own (ClusterRole below)."""
        self.cp.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps(
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "ClusterRole",
                    "metadata": {"name": "streamtrain-test-coredns"},
                    "rules": [
                        {
                            "apiGroups": [""],
                            "resources": ["services", "pods", "namespaces"],
                            "verbs": ["list", "watch"],
                        },
                        {
                            "apiGroups": ["discovery.k8s.io"],
                            "resources": ["endpointslices"],
                            "verbs": ["list", "watch"],
                        },
                    ],
                }
            ),
        )
        kc = self.credentials("streamtrain-test-coredns", role="streamtrain-test-coredns")
        corefile = self.workdir / "Corefile"
        corefile.write_text(f""".:53 {{
    bind {GATEWAY}
    errors
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kc} test
        fallthrough in-addr.arpa ip6.arpa
    }}
    forward . /etc/resolv.conf
    cache 5
}}
""")
        self._start("coredns", str(self.cp.bin / "coredns"), "-conf", str(corefile))
        self._wait("coredns", lambda: _listening(GATEWAY, 53), 60)

    def ready(self) -> bool:
        res = self.cp.kubectl(
            "get", "node", self.name, "-o", 'jsonpath={.status.conditions[?(@.type=="Ready")].status}', check=False
        )
        return res.returncode == 0 and res.stdout.strip() == "True"

    def up(self) -> Node:
        ensure_packages()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.bridge()
        self.containerd()
        self.import_images()
        self.kubelet()
        self.kube_proxy()
        self.dns()
        return self

    def down(self) -> None:
        """Pods first (through the CRI: their network is torn down), then the kubelet and containerd,
        then what they leave on the machine: mounts under the node's folder, cgroups, the bridge."""
        if "containerd" in self.procs and self.procs["containerd"].poll() is None:
            self._stop("kubelet")
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.crictl("rmp", "--all", "--force")
        self._stop("kubelet")
        self._stop("containerd")
        for name in ("kube-proxy", "coredns"):
            self._stop(name)
        if (self.cp.bin / "kube-proxy").exists():  # its iptables chains outlive it
            _run(str(self.cp.bin / "kube-proxy"), "--cleanup", "--proxy-mode", "iptables", check=False)
        mounts = [
            line.split()[1]
            for line in Path("/proc/self/mounts").read_text().splitlines()
            if line.split()[1].startswith(str(self.workdir))
        ]
        for m in sorted(mounts, key=len, reverse=True):
            _run("umount", "-l", m, check=False)
        for ctl in Path("/sys/fs/cgroup").iterdir():
            root = ctl / CGROUP_ROOT.lstrip("/")
            if root.is_dir():
                for sub in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                    if sub.is_dir():
                        with contextlib.suppress(OSError):
                            sub.rmdir()
                with contextlib.suppress(OSError):
                    root.rmdir()
        _run("ip", "link", "delete", BRIDGE, check=False)
        _run("ip", "route", "delete", "unreachable", SERVICE_CIDR, check=False)
        for tool in ("iptables", "ip6tables"):
            drop_chains(tool, LEFT_CHAINS)

    def _stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is not None:
            stop_group(proc)


@contextlib.contextmanager
def running(
    cp: ControlPlane,
    workdir: Path | None = None,
    archives: tuple[str, ...] = ARCHIVES,
    registries: tuple[str, ...] = (),
):
    """A node registered with ``cp``, stopped and cleaned up on exit, also on failure."""
    own = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="streamtrain-node-")) if own else workdir
    node = Node(cp, workdir, archives=archives, registries=registries)
    try:
        yield node.up()
    finally:
        node.down()
        if own:
            shutil.rmtree(workdir, ignore_errors=True)
