"""The control-plane fixtures never build: a cold build outlasts pytest's per-test timeout.

`make test-k8s` builds first (`make kube-build`); a fixture only checks, and a missing binary fails
at once with the command to run instead of a timeout ten minutes later.
"""

import os
import subprocess

import pytest

from tests.k8s import controlplane


def test_check_names_the_missing_binaries_and_the_make_target(tmp_path):
    out = subprocess.run(
        ["bash", str(controlplane.BUILD), "--check"],
        capture_output=True,
        text=True,
        env={**os.environ, "STREAMTRAIN_KUBE_CACHE": str(tmp_path)},
        check=False,
    )
    assert out.returncode == 1
    assert "make kube-build" in out.stderr
    for name in ("etcd", "kube-apiserver", "kwok", "helm"):
        assert name in out.stderr
    assert not list(tmp_path.iterdir()), "--check must build nothing"


def test_the_fixture_path_refuses_instead_of_building(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMTRAIN_KUBE_CACHE", str(tmp_path))
    with (
        pytest.raises(RuntimeError, match="make kube-build"),
        controlplane.running(tmp_path / "w", build_missing=False),
    ):
        pass
    assert not (tmp_path / "w").exists()


def test_check_prints_the_folder_when_everything_is_built(tmp_path):
    version = controlplane.K8S_VERSION
    bin_dir = tmp_path / version / "bin"
    bin_dir.mkdir(parents=True)
    (tmp_path / version / "kwok-stages").mkdir()
    for name in (
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kubectl",
        "helm",
        "kwok",
        "skaffold",
    ):
        (bin_dir / name).write_text("#!/bin/sh\n")
        (bin_dir / name).chmod(0o755)
    out = subprocess.run(
        ["bash", str(controlplane.BUILD), "--check"],
        capture_output=True,
        text=True,
        env={**os.environ, "STREAMTRAIN_KUBE_CACHE": str(tmp_path), "K8S_VERSION": version},
        check=True,
    )
    assert out.stdout.strip() == str(bin_dir)
