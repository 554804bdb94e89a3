"""The operator as a process (``kopf run -m streamtrain.operator.handlers``) on a real control plane, authenticated
with a token of the chart's ServiceAccount: it never runs as admin."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.k8s.conftest import RELEASE, RELEASE_NS
from tests.k8s.controlplane import kubeconfig


class Operator:
    """Started and stopped by the tests; its log is kept in ``workdir/operator.log``."""

    def __init__(self, cp, workdir, release: str = RELEASE, release_ns: str = RELEASE_NS, namespaces: tuple = ()):
        """``namespaces``: run as the chart does with watchNamespaces (kopf --namespace for each, and the
        status task told the same); empty: --all-namespaces."""
        self.cp = cp
        self.proc: subprocess.Popen | None = None
        self.namespaces = namespaces
        self.log = workdir / "operator.log"
        sa = cp.kubectl(
            "get",
            "serviceaccount",
            "-n",
            release_ns,
            "-l",
            f"app.kubernetes.io/instance={release}",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ).stdout
        token = cp.kubectl("create", "token", sa, "-n", release_ns, "--duration", "2h").stdout.strip()
        self.kubeconfig = workdir / "operator.kubeconfig"
        self.kubeconfig.write_text(
            kubeconfig(cp.server, cp.pki, user=f"system:serviceaccount:{release_ns}:{sa}", token=token)
        )

    def start(self, **settings: str) -> None:
        """``settings``: extra environment, e.g. ``STREAMTRAIN_OPERATOR_CONFLICT_RETRY="2"``."""
        env = {
            **self.cp.env(),
            "KUBECONFIG": str(self.kubeconfig),
            "STREAMTRAIN_OPERATOR_STATUS_INTERVAL": "1",
            **({"STREAMTRAIN_OPERATOR_NAMESPACES": ",".join(self.namespaces)} if self.namespaces else {}),
            **settings,
        }
        scope = [f"--namespace={n}" for n in self.namespaces] or ["-A"]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kopf", "run", "--standalone", *scope, "-m", "streamtrain.operator.handlers"],
            env=env,
            stdout=open(self.log, "ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self) -> int:
        assert self.proc is not None, "not started"
        os.killpg(self.proc.pid, signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        self.proc = None
        return code

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]


@contextmanager
def running_operator(cp, workdir: Path, namespace: str) -> Iterator[Operator]:
    """An operator (all namespaces) running for the duration, with ``namespace`` created before it starts
    and deleted (not waited for) after it stops: the module fixture of most operator tests."""
    cp.kubectl("create", "namespace", namespace, check=False)
    op = Operator(cp, workdir)
    op.start()
    try:
        yield op
    finally:
        op.stop()
        cp.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
