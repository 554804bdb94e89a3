"""kopf handlers: thin. Each reads the resource, calls the pure functions of ``children``/``status``
and the few API calls of ``kube``, and writes ``patch.status``. Run with ``kopf run operator/main.py``."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

import aiohttp
import httpx2
import kopf
import pydantic

from streamtrain.operator import GROUP, PLURAL, VERSION, children, kube, mqtt_tls, mqtt_users, signing, status
from streamtrain.operator.render import connections, objects
from streamtrain.operator.render import mqtt_tls as render_mqtt_tls
from streamtrain.operator.render import signing as render_signing
from streamtrain.preprocessing.spec import SpecError

#: How often child readiness is re-read into status.conditions (seconds).
STATUS_INTERVAL = float(os.environ.get("STREAMTRAIN_OPERATOR_STATUS_INTERVAL", "10"))
#: Namespaces the operator serves, comma-separated (the chart's watchNamespaces, also passed as kopf
#: --namespace flags); empty: every namespace. The status task lists StreamingTrainings only there.
NAMESPACES = tuple(n for n in os.environ.get("STREAMTRAIN_OPERATOR_NAMESPACES", "").split(",") if n)
RESOURCE = (GROUP, VERSION, PLURAL)
#: Seconds before a reconcile blocked by an object we do not own (or a field another manager set) is retried.
CONFLICT_RETRY = float(os.environ.get("STREAMTRAIN_OPERATOR_CONFLICT_RETRY", "60"))
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
    """Bring the children to the spec: server-side apply each, delete those no longer wanted.

    Idempotent (apply), so a restart or a replayed event repeats no work. Only what this resource owns
    (an owner reference with its UID) is written or pruned: a child whose name another object already
    has is left untouched and reported (NameConflict condition and Event), and kopf retries later."""
    try:
        wanted = children.desired(body, await kube.owned(namespace, name, meta["uid"]))
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
    uid = meta["uid"]
    spec = children.defaulted_spec(body)
    if render_signing.operator_made(spec):
        # Before the children that read it. Created once, never read or replaced (kube.create_secret_once).
        secret = signing.new_secret(name, namespace)
        kopf.adopt(secret, owner=body)
        outcome = await kube.create_secret_once(secret)
        logger.info("%s Secret/%s", outcome, secret["metadata"]["name"])  # its name only, never its data
    conflicts: list[str] = []
    refused: list[str] = []
    held_back: set[tuple[str, str]] = set()
    created = list((body.get("status") or {}).get("createdSecrets") or [])
    # The operator's own MQTT Secrets: created once, never read or replaced (kube.create_secret_once). The
    # operator may not read Secrets: a 409 for a name status.createdSecrets does not list is someone
    # else's Secret, whose certificate or users are not ours to serve.
    for secret_name, make in operator_secrets(name, namespace, spec):
        if await kube.secret_name_taken(secret_name, namespace):
            outcome = "kept"  # no material made (hashing a fleet's passwords costs CPU)
        else:
            secret = await asyncio.to_thread(make)
            kopf.adopt(secret, owner=body)
            outcome = await kube.create_secret_once(secret)
        logger.info("%s Secret/%s", outcome, secret_name)  # its name only, never its data
        if outcome == "created" and secret_name not in created:
            created = [*created, secret_name]
            patch.status["createdSecrets"] = created
        elif outcome == "kept" and secret_name not in created:
            message = f"Secret/{secret_name} exists and was not made by this operator: it is neither used nor adopted"
            conflicts.append(f"Secret/{secret_name}")
            kopf.warn(body, reason="NameConflict", message=message)
            logger.info("name_conflict %s", message)
            # Nothing that would mount it is written: the broker must not serve a key or users someone else
            # chose. (Still wanted: what stands from before is neither changed nor pruned.)
            held_back |= {children.key(c) for c in wanted if children.references_secret(c, secret_name)}
    for child in wanted:
        if children.key(child) in held_back:
            continue
        try:
            outcome = await kube.apply(child, uid)
        except kube.NameConflict as exc:
            conflicts.append(exc.child)
            kopf.warn(body, reason="NameConflict", message=str(exc))
            logger.info("name_conflict %s", exc)
            continue
        except kube.FieldConflict as exc:
            refused.append(str(exc))
            logger.warning("apply_refused %s", exc)
            continue
        logger.info("%s %s/%s", outcome, child["kind"], child["metadata"]["name"])
    existing = await kube.owned(namespace, name, uid)
    for old in children.stale(existing, wanted):
        await kube.delete(old)
        logger.info("deleted %s/%s", old["kind"], old["metadata"]["name"])
    patch.status["children"] = [
        "/".join(children.key(m))
        for m in wanted
        if "/".join(children.key(m)) not in conflicts and children.key(m) not in held_back
    ]
    patch.status["observedGeneration"] = meta.get("generation")
    current = body.get("status") or {}
    if conflicts:
        conds = status.conditions(
            children.observed_by_component(wanted, existing),
            current.get("conditions") or [],
            meta.get("generation"),
            conflicts,
        )
        patch.status["conditions"] = conds
        patch.status["phase"] = status.phase(conds)
    elif current.get("phase") in (None, "Failed", "Pending"):
        patch.status["phase"] = "Progressing"
    if conflicts or refused:
        # Temporary: a person may rename or delete the other object, or give the field back.
        blocked = ([f"names taken by objects not ours: {', '.join(conflicts)}"] if conflicts else []) + refused
        raise kopf.TemporaryError("; ".join(blocked), delay=CONFLICT_RETRY)
    memo["reconciled"] = memo.get("reconciled", 0) + 1


async def observe_forever(logger: logging.Logger | logging.LoggerAdapter) -> None:
    """Every STATUS_INTERVAL: each StreamingTraining's children -> its status. This is a loop, not a
    kopf handler that could retry, so it never ends on an error: a failed round or one resource's
    failure (an API error, a scorer's odd /metrics, a bug) is logged and tried again next round, and
    the other resources' status goes on."""
    while True:
        await asyncio.sleep(STATUS_INTERVAL)
        try:
            bodies = await kube.streaming_trainings(NAMESPACES)
        except (httpx2.HTTPError, OSError) as exc:
            logger.warning("status_round_failed retry_in=%.0fs error=%s", STATUS_INTERVAL, exc)
            continue
        except Exception:
            logger.exception("status_round_failed retry_in=%.0fs", STATUS_INTERVAL)
            continue
        for body in bodies:
            meta = body.get("metadata") or {}
            try:
                await observe(body)
            except (httpx2.HTTPError, OSError) as exc:
                logger.warning(
                    "status_observe_failed namespace=%s name=%s retry_in=%.0fs error=%s",
                    meta.get("namespace"),
                    meta.get("name"),
                    STATUS_INTERVAL,
                    exc,
                )
            except Exception:
                logger.exception(
                    "status_observe_failed namespace=%s name=%s retry_in=%.0fs",
                    meta.get("namespace"),
                    meta.get("name"),
                    STATUS_INTERVAL,
                )


async def observe(body: dict) -> None:
    """Child readiness -> conditions and phase; trainer Jobs -> lastTraining; scorers -> model version."""
    meta, current = body["metadata"], body.get("status") or {}
    if meta.get("deletionTimestamp"):
        return
    if current.get("phase") == "Failed" and (current.get("conditions") or [{}])[0].get("reason") == "InvalidSpec":
        return  # nothing to observe until the spec is fixed
    name, namespace, uid = meta["name"], meta["namespace"], meta["uid"]
    existing = await kube.owned(namespace, name, uid)
    try:
        wanted = children.desired(body, existing)
    except INVALID_SPEC:
        return  # the reconcile handler reports an invalid spec
    conds = status.conditions(
        children.observed_by_component(wanted, existing),
        current.get("conditions") or [],
        meta.get("generation"),
        await name_conflicts(wanted, existing, uid) + secret_conflicts(body),
    )
    new: dict = {"conditions": conds, "phase": status.phase(conds)}
    training = status.last_training(children.training_jobs(existing))
    if training:
        new["lastTraining"] = training
    new.update(await scorer_metrics(name, namespace))
    if _strip(new) != _strip({k: current.get(k) for k in new}):
        await kube.patch_status(namespace, name, new)


async def name_conflicts(wanted: list[dict], existing: list[dict], uid: str) -> list[str]:
    """Wanted children that are not among ours because an object we do not own has the name (read only
    for the missing ones: none once the pipeline stands)."""
    have = {children.key(m) for m in existing}
    out = []
    for m in wanted:
        if children.key(m) in have:
            continue
        other = await kube.get(m["apiVersion"], m["kind"], m["metadata"]["name"], m["metadata"]["namespace"])
        if other is not None and not kube.owned_by(other, uid):
            out.append("/".join(children.key(m)))
    return out


def secret_conflicts(body: dict) -> list[str]:
    """The operator's Secrets whose name another Secret holds: once the current generation is reconciled,
    a Secret it should have made that ``status.createdSecrets`` does not list (the operator may not read
    Secrets, so that record is how it knows its own)."""
    meta, current = body["metadata"], body.get("status") or {}
    if current.get("observedGeneration") != meta.get("generation"):
        return []  # not reconciled yet: the Secret may simply not be made yet
    made = set(current.get("createdSecrets") or [])
    wanted = operator_secrets(meta["name"], meta.get("namespace", ""), children.defaulted_spec(body))
    return [f"Secret/{n}" for n, _ in wanted if n not in made]


def operator_secrets(name: str, namespace: str, spec: dict) -> list[tuple[str, Callable[[], objects.Manifest]]]:
    """The MQTT Secrets the operator makes for this resource: (name, how to make it), in creation order."""
    out: list[tuple[str, Callable[[], objects.Manifest]]] = []
    if render_mqtt_tls.operator_made(spec):
        out.append((render_mqtt_tls.generated_name(name), lambda: mqtt_tls.new_secret(name, namespace)))
    if connections.mqtt_users_operator_made(spec):
        out.append((connections.mqtt_users_generated_name(name), lambda: mqtt_users.new_secret(name, namespace, spec)))
    return out


def _strip(s: dict) -> dict:
    """Status without timestamps and nulls (in a merge patch a null removes the key, so it equals an
    absent one), to patch only on a real change (no churn every interval)."""
    out = objects.without_nulls(s)
    out["conditions"] = [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in s.get("conditions") or []]
    return out


async def scorer_metrics(name: str, namespace: str) -> dict[str, str | None]:
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
    return status.combine_scorers(
        [status.scorer_metrics(t, source=a) for a, t in zip(addresses, texts, strict=True) if t is not None]
    )


async def _metrics_text(session: aiohttp.ClientSession, address: str) -> str | None:
    host = f"[{address}]" if ":" in address else address
    try:
        async with session.get(f"http://{host}:{objects.METRICS_PORT}/metrics") as resp:
            return await resp.text() if resp.status == 200 else None
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return None
