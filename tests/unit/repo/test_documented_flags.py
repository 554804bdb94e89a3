"""Every `--flag` the README and docs show for a streamtrain command exists on some streamtrain command
(flags of other tools in the docs: kubectl, helm, kind, minikube, docker, kafka-configs.sh, kube-apiserver, kwok, are listed)."""

import re
from pathlib import Path

import click

from streamtrain.cli.main import cli

REPO = Path(__file__).resolve().parents[3]
OTHER_TOOLS = {
    "--add-config",
    "--alter",
    "--bootstrap-server",
    "--build-arg",
    "--cpus",
    "--create-namespace",
    "--default-repo",  # skaffold (docs/kubernetes.md, a registry to push to)
    "--entity-name",
    "--entity-type",
    "--follow",
    "--from",
    "--from-file",
    "--from-literal",
    "--insecure-registry",  # skaffold (docs/kubernetes.md, a registry on loopback over plain HTTP)
    "--install",  # helm upgrade --install (docs/kubernetes.md: what skaffold runs)
    "--kube-version",  # helm template (docs/kubernetes.md: skaffold render)
    "--kubelet-preferred-address-types",  # kube-apiserver (docs/kubernetes.md, the real node)
    "--memory",
    "--node-lease-duration-seconds",  # kwok (docs/kubernetes.md, the fake node's Lease)
    "--name",
    "--no-conv-ae",  # python -m bench.quality (docs/quality.md: skip the slow offline baseline)
    "--namespace",
    "--network",  # podman build --network host (docs/kubernetes.md: what skaffold's builds do through podman)
    "--registry",  # tools/kube/build.sh --registry (docs/kubernetes.md, the skaffold tier's registry)
    "--set",
    "--tail",
    "--time",  # podman system service --time=0 (docs/kubernetes.md, skaffold's Docker API)
    "--type",
    "--version",
    "--watch",
}


def all_options(group: click.Group) -> set[str]:
    ctx = click.Context(group)
    found = set()
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if isinstance(cmd, click.Group):
            found |= all_options(cmd)
        for param in cmd.params:
            found |= {o for o in [*param.opts, *param.secondary_opts] if o.startswith("--")}
    return found


def test_every_documented_flag_exists():
    documented = set()
    # docs/reference.md is generated from the commands themselves (its own freshness test holds it);
    # click wraps its help text at hyphens, which would cut a flag in two here.
    written = [p for p in (REPO / "docs").glob("*.md") if p.name != "reference.md"]
    for doc in [REPO / "README.md", *written, REPO / "scorer" / "streams" / "README.md"]:
        documented |= set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", doc.read_text()))
    known = all_options(cli) | {o for p in cli.params for o in p.opts} | {"--help"}
    assert sorted(documented - known - OTHER_TOOLS) == []
