"""The operator's status task (``handlers.observe_forever``) without a cluster: its Kubernetes calls and
the scorers' /metrics are replaced, so what is tested is that the one operator-wide loop survives what
one resource or one scorer Pod throws at it (issue 24, finding 11). On a real API server the task is
exercised by tests/k8s/test_real_operator.py."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from streamtrain.operator import handlers, kube
from tests.k8s.conftest import ROOT, load_example

GOOD = "streamtrain_scorer_model_version 7.0\nstreamtrain_scorer_anomaly_rate 0.0125\n"
#: What any Pod labelled as a scorer can serve.
POISONED = "streamtrain_scorer_model_version NaN\nstreamtrain_scorer_anomaly_rate 0.5\n"


def resource(name: str) -> dict:
    body = load_example(ROOT / "examples/minimal.yaml")
    body["metadata"] = {"name": name, "namespace": "ns", "uid": f"uid-{name}", "generation": 1}
    return body


class FakeCluster:
    """Two StreamingTrainings, ``victim`` and ``healthy``, each with one scorer Pod; records status patches."""

    def __init__(self, monkeypatch, metrics: dict[str, str], owned_error: dict[str, Exception] | None = None):
        self.rounds = 0
        self.patches: list[tuple[str, dict]] = []
        self.owned_error = owned_error or {}
        address = {"victim-scorer": "10.0.0.1", "healthy-scorer": "10.0.0.2"}
        by_address = {address[f"{n}-scorer"]: text for n, text in metrics.items()}

        async def streaming_trainings(namespaces=()):
            self.rounds += 1
            return [resource("victim"), resource("healthy")]

        async def owned(namespace, name, uid=None):  # uid=None: also runs against the code before the fix
            if name in self.owned_error:
                raise self.owned_error[name]
            return []

        async def get(api_version, kind, name, namespace):
            return None

        async def endpoint_addresses(namespace, service):
            return [address[service]]

        async def metrics_text(session, addr):
            return by_address[addr]

        async def patch_status(namespace, name, status):
            self.patches.append((name, status))

        monkeypatch.setattr(handlers, "STATUS_INTERVAL", 0.01)
        monkeypatch.setattr(kube, "streaming_trainings", streaming_trainings)
        monkeypatch.setattr(kube, "owned", owned)
        monkeypatch.setattr(kube, "get", get)
        monkeypatch.setattr(kube, "endpoint_addresses", endpoint_addresses)
        monkeypatch.setattr(kube, "patch_status", patch_status)
        monkeypatch.setattr(handlers, "_metrics_text", metrics_text)

    def run_rounds(self, rounds: int, timeout: float = 20.0) -> bool:
        """Run the task until it has started ``rounds`` rounds (so the ones before finished) or the
        deadline passes; whether the task was still alive then."""

        async def scenario() -> bool:
            task = asyncio.create_task(handlers.observe_forever(logging.getLogger("test-observer")))
            end = time.monotonic() + timeout
            while self.rounds < rounds and not task.done() and time.monotonic() < end:
                await asyncio.sleep(0.01)
            alive = not task.done()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return alive

        return asyncio.run(scenario())

    def statuses(self, name: str) -> list[dict]:
        return [s for n, s in self.patches if n == name]


def test_a_nan_model_version_neither_kills_the_status_task_nor_freezes_other_resources(monkeypatch, caplog):
    cluster = FakeCluster(monkeypatch, {"victim": POISONED, "healthy": GOOD})
    with caplog.at_level(logging.WARNING):
        alive = cluster.run_rounds(3)
    assert alive and cluster.rounds >= 3, "the status task died"
    healthy = cluster.statuses("healthy")
    assert len(healthy) >= 2 and healthy[-1]["modelVersion"] == "7", healthy[-1:]
    # The poisoned Pod's version is skipped, its other metric and the resource's conditions still written.
    victim = cluster.statuses("victim")
    assert victim and "modelVersion" not in victim[-1] and victim[-1]["anomalyRate"] == "0.5000", victim[-1:]
    assert any(c["type"] == "Ready" for c in victim[-1]["conditions"])
    assert "scorer_metric_rejected metric=streamtrain_scorer_model_version value='NaN' source=10.0.0.1" in caplog.text


@pytest.mark.parametrize("error", [RuntimeError("a bug"), ValueError("odd object"), OSError("connection reset")])
def test_any_error_for_one_resource_is_logged_and_the_others_status_goes_on(monkeypatch, caplog, error):
    cluster = FakeCluster(monkeypatch, {"victim": GOOD, "healthy": GOOD}, owned_error={"victim": error})
    with caplog.at_level(logging.WARNING):
        alive = cluster.run_rounds(3)
    assert alive and cluster.rounds >= 3, "the status task died"
    assert len(cluster.statuses("healthy")) >= 2 and not cluster.statuses("victim")
    assert "status_observe_failed namespace=ns name=victim" in caplog.text and str(error) in caplog.text


def test_a_failed_list_of_resources_is_retried_next_round(monkeypatch, caplog):
    cluster = FakeCluster(monkeypatch, {"victim": GOOD, "healthy": GOOD})
    listed = kube.streaming_trainings
    calls = 0

    async def flaky(namespaces=()):
        nonlocal calls
        calls += 1
        if calls == 1:
            cluster.rounds += 1
            raise RuntimeError("list failed")
        return await listed()

    monkeypatch.setattr(kube, "streaming_trainings", flaky)
    with caplog.at_level(logging.WARNING):
        alive = cluster.run_rounds(3)
    assert alive and cluster.statuses("healthy"), "no round after the failed one"
    assert "status_round_failed" in caplog.text
