"""What a test node is made of, as data: its names and addresses, and the configuration of
containerd, the CNI network and the kubelet (``node.py`` writes them out and starts the processes)."""

from __future__ import annotations

from pathlib import Path

from tests.k8s.controlplane import ROOT

IMAGES = ROOT / ".streamtrain/images"
#: containerd's root (content store, snapshots) survives runs: importing the images costs a minute.
CONTAINERD_ROOT = ROOT / ".streamtrain/node/containerd"
#: OCI archives a node needs (tools/images/build.sh export); pause is the Pods' sandbox image.
ARCHIVES = ("pause", "streamtrain", "streamtrain-lite", "streamtrain-hivemq", "streamtrain-scorer-streams")
SANDBOX_IMAGE = "registry.k8s.io/pause:3.10"
CNI_BIN = Path("/usr/lib/cni")
BRIDGE = "streamtrain0"
SUBNET, GATEWAY = "10.244.0.0/24", "10.244.0.1"
CGROUP_ROOT = "/streamtrain-node"
CLUSTER_DOMAIN = "cluster.local"
NODE_NAME = "node-0"
#: Debian packages of the node (installed by `ensure_packages` when missing).
PACKAGES = {
    "containerd": "/usr/bin/containerd",
    "runc": "/usr/sbin/runc",
    "containernetworking-plugins": str(CNI_BIN / "bridge"),
    "iptables": "/usr/sbin/iptables",
}


def containerd_config(d: Path, root: Path) -> str:
    """containerd 1.6 (config version 2): runc with cgroupfs, our pause image, CNI from our folder,
    registries configured per host in ``certs.d/<host>/hosts.toml`` (see ``registry_hosts``).
    restrict_oom_score_adj: root here lacks CAP_SYS_RESOURCE, so no container may ask for a lower
    OOM score than containerd's own."""
    return f"""version = 2
root = "{root}"
state = "{d}/state"
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{SANDBOX_IMAGE}"
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{d}/cni"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{d}/certs.d"
"""


def cni_config(ipam_dir: Path) -> dict:
    return {
        "cniVersion": "1.0.0",
        "name": "streamtrain",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(ipam_dir),
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "ranges": [[{"subnet": SUBNET, "gateway": GATEWAY}]],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "firewall", "backend": "iptables"},
        ],
    }


def kubelet_config(d: Path, socket: str, ca: Path, port: int, healthz: int) -> dict:
    """cgroup v1 (hybrid) with the cgroupfs driver; no swap check; OOM scores left alone (no
    CAP_SYS_RESOURCE); eviction thresholds low enough that a busy shared disk does not evict the Pods."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "failSwapOn": False,
        "cgroupRoot": CGROUP_ROOT,
        "containerRuntimeEndpoint": f"unix://{socket}",
        "podLogsDir": str(d / "pod-logs"),
        "address": GATEWAY,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz,
        # The API server reaches the kubelet (logs, exec) without a client certificate here.
        "authentication": {
            "anonymous": {"enabled": True},
            "webhook": {"enabled": False},
            "x509": {"clientCAFile": str(ca)},
        },
        "authorization": {"mode": "AlwaysAllow"},
        "oomScoreAdj": 0,
        "registerNode": True,
        "serializeImagePulls": False,
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "resolvConf": "/etc/resolv.conf",
        "clusterDomain": CLUSTER_DOMAIN,
        "clusterDNS": [GATEWAY],
        "staticPodPath": "",
        "syncFrequency": "10s",
        "nodeStatusUpdateFrequency": "5s",
        "shutdownGracePeriod": "0s",
    }


def registry_hosts(address: str) -> str:
    """containerd's hosts.toml for a registry served over plain HTTP at ``address`` (host:port), as
    ``certs.d/<address>/hosts.toml``: pulls and resolves go there, never over HTTPS."""
    return f"""server = "http://{address}"

[host."http://{address}"]
  capabilities = ["pull", "resolve"]
"""
