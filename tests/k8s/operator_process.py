"""The operator as a process (``kopf run -m streamtrain.operator.handlers``) on a real control plane, authenticated
with a token of the chart's ServiceAccount: it never runs as admin."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from tests.k8s.conftest import RELEASE, RELEASE_NS
from tests.k8s.controlplane import kubeconfig


class Operator:
    """Started and stopped by the tests; its log is kept in ``workdir/operator.log``."""

    def __init__(self, cp, workdir):
        self.cp, self.proc = cp, None
        self.log = workdir / "operator.log"
        sa = cp.kubectl(
            "get",
            "serviceaccount",
            "-n",
            RELEASE_NS,
            "-l",
            f"app.kubernetes.io/instance={RELEASE}",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ).stdout
        token = cp.kubectl("create", "token", sa, "-n", RELEASE_NS, "--duration", "2h").stdout.strip()
        self.kubeconfig = workdir / "operator.kubeconfig"
        self.kubeconfig.write_text(
            kubeconfig(cp.server, cp.pki, user=f"system:serviceaccount:{RELEASE_NS}:{sa}", token=token)
        )

    def start(self) -> None:
        env = {**self.cp.env(), "KUBECONFIG": str(self.kubeconfig), "STREAMTRAIN_OPERATOR_STATUS_INTERVAL": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kopf", "run", "--standalone", "-A", "-m", "streamtrain.operator.handlers"],
            env=env,
            stdout=open(self.log, "ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self) -> int:
        os.killpg(self.proc.pid, signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        self.proc = None
        return code

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]
