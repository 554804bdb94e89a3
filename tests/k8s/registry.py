"""A container registry on loopback (distribution's, built by tools/kube/build.sh --registry): what skaffold
pushes images to and the node pulls from, and where `helm push` puts the chart as an OCI artefact."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import yaml

from streamtrain.ports import free_port
from tests.programs import stop_group
from tests.waiting import eventually


def answers(url: str) -> bool:
    res = subprocess.run(["curl", "-fsS", "-o", "/dev/null", url], capture_output=True, timeout=10, check=False)
    return res.returncode == 0


@contextlib.contextmanager
def running_registry(binaries: Path, workdir: Path, storage: Path) -> Iterator[str]:
    """The registry serving ``storage`` over plain HTTP on a free loopback port, stopped after; yields its
    address (host:port). Its log is ``workdir/registry.log``."""
    storage.mkdir(parents=True, exist_ok=True)
    address = f"127.0.0.1:{free_port()}"
    config = {
        "version": 0.1,
        "log": {"level": "warn"},
        "storage": {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": True}},
        "http": {"addr": address},
    }
    (workdir / "config.yml").write_text(yaml.safe_dump(config))
    log = workdir / "registry.log"
    proc = subprocess.Popen(
        [str(binaries / "registry"), "serve", str(workdir / "config.yml")],
        stdout=open(log, "ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        eventually(
            lambda: proc.poll() is not None or answers(f"http://{address}/v2/"), "the registry to answer", timeout=60
        )
        assert proc.poll() is None, log.read_text()[-3000:]
        yield address
    finally:
        stop_group(proc)
