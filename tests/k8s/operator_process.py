"""The operator as a process (``kopf run -m streamtrain.operator.handlers``) on a real control plane, authenticated
with a token of the chart's ServiceAccount: it never runs as admin."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from streamtrain.operator import kube
from tests.k8s.conftest import RELEASE, RELEASE_NS
from tests.k8s.controlplane import kubeconfig
from tests.waiting import eventually


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
def running_operator(cp, workdir: Path, namespace: str, **settings: str) -> Iterator[Operator]:
    """An operator (all namespaces; ``settings`` its environment) running for the duration, with ``namespace``
    created before it starts and deleted (not waited for) after it stops: the module fixture of most
    operator tests."""
    cp.kubectl("create", "namespace", namespace, check=False)
    op = Operator(cp, workdir)
    op.start(**settings)
    try:
        yield op
    finally:
        op.stop()
        cp.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def owned(cp, kind: str, namespace: str, uid: str) -> list[dict]:
    """The objects of ``kind`` in ``namespace`` that the resource with ``uid`` owns."""
    items = json.loads(cp.kubectl("get", kind, "-n", namespace, "-o", "json").stdout)["items"]
    return [o for o in items if kube.owned_by(o, uid)]


def assert_secret_kept_across_a_reconcile(cp, op: Operator, namespace: str, name: str, uid: str, secret: dict) -> str:
    """Change the resource's spec (its fleet to 7 devices), wait for the reconcile that keeps ``secret`` (an
    operator-made Secret), and check it is the same object with the same data. The operator's log so far."""
    cp.patch_spec(namespace, name, {"fleet": {"devices": 7}})

    def simulator_devices() -> bool | None:
        sim = next(
            (d for d in owned(cp, "deployments", namespace, uid) if d["metadata"]["name"] == f"{name}-simulator"),
            None,
        )
        env = (
            {e["name"]: e.get("value") for e in sim["spec"]["template"]["spec"]["containers"][0]["env"]} if sim else {}
        )
        return env.get("STREAMTRAIN_DEVICES") == "7" or None

    secret_name = secret["metadata"]["name"]
    eventually(simulator_devices, "the spec change reconciled", explain=op.output)
    eventually(
        lambda: op.log.read_text().count(f"kept Secret/{secret_name}") >= 1,
        "a reconcile keeping the Secret",
        explain=op.output,
    )
    again = cp.get_object("secret", secret_name, namespace)
    assert again["data"] == secret["data"]
    assert again["metadata"]["resourceVersion"] == secret["metadata"]["resourceVersion"]
    assert again["metadata"]["uid"] == secret["metadata"]["uid"]
    return op.log.read_text()
