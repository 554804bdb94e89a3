"""kopf handlers: thin. Each reads the resource, calls the pure functions of ``children``/``status``
and the few API calls of ``kube``, and writes ``patch.status``. Run with ``kopf run operator/main.py``."""

from __future__ import annotations

import asyncio
import logging
import os

import aiohttp
import httpx2
import kopf
import pydantic

from streamtrain.operator import GROUP, PLURAL, VERSION, children, kube, status
from streamtrain.operator.render import objects
from streamtrain.preprocessing.spec import SpecError

#: How often child readiness is re-read into status.conditions (seconds).
STATUS_INTERVAL = float(os.environ.get("STREAMTRAIN_OPERATOR_STATUS_INTERVAL", "10"))
RESOURCE = (GROUP, VERSION, PLURAL)
#: What rendering raises for a spec the schema accepted but the pipeline cannot run.
INVALID_SPEC = (SpecError, pydantic.ValidationError, ValueError)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **_) -> None:
    # Problems become Kubernetes Events on the resource (`kubectl describe` shows them): kopf posts
    # handler loggers' messages only when `posting.loggers` is on, and it is off by default.
    settings.posting.enabled = True
    settings.posting.loggers = True
    settings.posting.level = logging.WARNING
    settings.persistence.finalizer = f"{GROUP}/operator"  # none is added (below); kopf removes an old one
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.watching.server_timeout = 270  # reconnect the watch before proxies drop it
    # No finalizer: children go with their owner by garbage collection, so nothing needs the operator
    # at deletion. (A kopf timer or daemon would add one, and a resource deleted while the operator
    # is down, or after `helm uninstall`, would then stay Terminating for ever.) Status is observed by
    # one operator-wide task instead; a finalizer left by an older version is still removed by kopf.
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # lightkube's HTTP client logs every request at INFO
    memo["observer"] = asyncio.create_task(observe_forever(logger))


@kopf.on.cleanup()
async def stop_observer(memo: kopf.Memo, **_) -> None:
    task = memo.get("observer")
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@kopf.on.probe(id="reconciled")
def probe(memo: kopf.Memo, **_) -> int:
    return memo.get("reconciled", 0)


@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE, field="spec")
@kopf.on.resume(*RESOURCE)
async def reconcile(
    body: kopf.Body,
    name: str,
    namespace: str,
    meta: kopf.Meta,
    patch: kopf.Patch,
    memo: kopf.Memo,
    logger: kopf.Logger,
    **_,
) -> None:
    """Bring the children to the spec: create or patch each, delete those no longer wanted.

    Idempotent (create, 409 -> merge patch), so a restart or a replayed event repeats no work."""
    try:
        wanted = children.desired(body)
    except INVALID_SPEC as exc:
        patch.status["phase"] = "Failed"
        patch.status["conditions"] = [
            {
                "type": "Ready",
                "status": "False",
                "reason": "InvalidSpec",
                "message": str(exc)[:1000],
                "lastTransitionTime": status.now(),
            }
        ]
        raise kopf.PermanentError(f"spec cannot run: {exc}") from exc
    for child in wanted:
        outcome = await kube.apply(child)
        logger.info("%s %s/%s", outcome, child["kind"], child["metadata"]["name"])
    for old in children.stale(await kube.owned(namespace, name), wanted):
        await kube.delete(old)
        logger.info("deleted %s/%s", old["kind"], old["metadata"]["name"])
    patch.status["children"] = [f"{c['kind']}/{c['metadata']['name']}" for c in wanted]
    patch.status["observedGeneration"] = meta.get("generation")
    if (body.get("status") or {}).get("phase") in (None, "Failed", "Pending"):
        patch.status["phase"] = "Progressing"
    memo["reconciled"] = memo.get("reconciled", 0) + 1


async def observe_forever(logger: logging.Logger | logging.LoggerAdapter) -> None:
    """Every STATUS_INTERVAL: each StreamingTraining's children -> its status. A failed API call is
    logged and retried on the next round (this is a loop, not a kopf handler that could retry)."""
    while True:
        await asyncio.sleep(STATUS_INTERVAL)
        try:
            for body in await kube.streaming_trainings():
                await observe(body)
        except (httpx2.HTTPError, OSError) as exc:
            logger.warning("status round failed, retrying in %.0f s: %s", STATUS_INTERVAL, exc)


async def observe(body: dict) -> None:
    """Child readiness -> conditions and phase; trainer Jobs -> lastTraining; scorers -> model version."""
    meta, current = body["metadata"], body.get("status") or {}
    if meta.get("deletionTimestamp"):
        return
    if current.get("phase") == "Failed" and (current.get("conditions") or [{}])[0].get("reason") == "InvalidSpec":
        return  # nothing to observe until the spec is fixed
    name, namespace = meta["name"], meta["namespace"]
    try:
        wanted = children.desired(body)
    except INVALID_SPEC:
        return  # the reconcile handler reports an invalid spec
    existing = await kube.owned(namespace, name)
    conds = status.conditions(
        children.observed_by_component(wanted, existing), current.get("conditions") or [], meta.get("generation")
    )
    new: dict = {"conditions": conds, "phase": status.phase(conds)}
    training = status.last_training(children.training_jobs(existing))
    if training:
        new["lastTraining"] = training
    new.update(await scorer_metrics(name, namespace))
    if _strip(new) != _strip({k: current.get(k) for k in new}):
        await kube.patch_status(namespace, name, new)


def _strip(s: dict) -> dict:
    """Status without timestamps and nulls (in a merge patch a null removes the key, so it equals an
    absent one), to patch only on a real change (no churn every interval)."""
    out = objects.without_nulls(s)
    out["conditions"] = [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in s.get("conditions") or []]
    return out


async def scorer_metrics(name: str, namespace: str) -> dict[str, str]:
    """Model version and anomaly rate from the /metrics of every ready scorer Pod, at the Pod addresses
    the scorer Service's EndpointSlices list: no cluster DNS or Service routing needed, so the same
    works in the cluster and from a machine on the Pod network, and every replica is asked (not one
    picked by a Service).

    Best effort, like the printer columns it feeds: an unreachable scorer, or a role without
    endpointslices (a chart older than this operator), leaves the status fields as they were while
    the conditions are still written."""
    try:
        addresses = await kube.endpoint_addresses(namespace, f"{name}-scorer")
    except httpx2.HTTPStatusError as exc:
        logging.getLogger(__name__).warning("cannot list the scorers' EndpointSlices in %s: %s", namespace, exc)
        return {}
    if not addresses:
        return {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        texts = await asyncio.gather(*(_metrics_text(session, address) for address in addresses))
    return status.combine_scorers([status.scorer_metrics(t) for t in texts if t is not None])


async def _metrics_text(session: aiohttp.ClientSession, address: str) -> str | None:
    host = f"[{address}]" if ":" in address else address
    try:
        async with session.get(f"http://{host}:{objects.METRICS_PORT}/metrics") as resp:
            return await resp.text() if resp.status == 200 else None
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return None
