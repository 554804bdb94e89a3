"""The operator's few Kubernetes calls (lightkube, async: the event loop never blocks).

Configuration comes from the environment the way kopf's own login does: in-cluster ServiceAccount
first, then $KUBECONFIG (or ~/.kube/config) as the fallback on a laptop.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any, cast

from httpx2 import HTTPStatusError  # the HTTP library lightkube 1.x is built on
from lightkube import AsyncClient, KubeConfig
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.core_v1 import Secret
from lightkube.resources.discovery_v1 import EndpointSlice
from lightkube.types import CascadeType, PatchType

from streamtrain.operator import GROUP, KIND, VERSION
from streamtrain.operator import PLURAL as CR_PLURAL

Manifest = dict[str, Any]

#: Resource (plural) of every kind the operator renders; RBAC in the chart grants exactly these.
PLURAL = {
    "Deployment": "deployments",
    "Service": "services",
    "ConfigMap": "configmaps",
    "PersistentVolumeClaim": "persistentvolumeclaims",
    "Job": "jobs",
    "CronJob": "cronjobs",
    "Kafka": "kafkas",
    "KafkaNodePool": "kafkanodepools",
    "KafkaTopic": "kafkatopics",
    "KafkaUser": "kafkausers",
    "PodDisruptionBudget": "poddisruptionbudgets",
    "ScaledObject": "scaledobjects",
    "TriggerAuthentication": "triggerauthentications",
    "NetworkPolicy": "networkpolicies",
}
#: Kind by apiVersion, for listing what already exists (pruning and readiness).
KINDS = {
    "v1": ("Service", "ConfigMap", "PersistentVolumeClaim"),
    "apps/v1": ("Deployment",),
    "batch/v1": ("Job", "CronJob"),
    "policy/v1": ("PodDisruptionBudget",),
    "kafka.strimzi.io/v1": ("Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser"),
    "keda.sh/v1alpha1": ("ScaledObject", "TriggerAuthentication"),
    "networking.k8s.io/v1": ("NetworkPolicy",),
}
FIELD_MANAGER = "streamtrain-operator"


def _code(exc: HTTPStatusError) -> int:
    """HTTP status of a failed call. lightkube raises its ApiError (a subclass) only for replies typed exactly
    ``application/json``; some servers add a charset, so the base class and the response code are used."""
    return exc.response.status_code


@cache
def resource(api_version: str, kind: str):
    group, _, version = api_version.rpartition("/")
    return create_namespaced_resource(group, version, kind, PLURAL[kind])


@cache
def client() -> AsyncClient:
    return AsyncClient(config=KubeConfig.from_env(), field_manager=FIELD_MANAGER)


class NameConflict(Exception):
    """An object with a child's name exists and this resource does not own it (no owner reference with
    its UID): someone else's, left untouched. Not retried by itself: it stays until a person renames or
    deletes one of the two."""

    def __init__(self, manifest: Manifest, existing: Manifest):
        self.child = f"{manifest['kind']}/{manifest['metadata']['name']}"
        owners = [f"{r.get('kind')}/{r.get('name')}" for r in existing["metadata"].get("ownerReferences") or []]
        super().__init__(
            f"{self.child} exists and is not owned by this StreamingTraining "
            f"(owners: {', '.join(owners) or 'none'}); left untouched"
        )


class FieldConflict(Exception):
    """Server-side apply refused: another field manager (a person's ``kubectl edit``, another
    controller) set fields of our child to other values. The operator does not force them; it retries."""


def owned_by(obj: Manifest, uid: str) -> bool:
    """Whether ``obj`` has an owner reference to the object with this UID. Labels prove nothing:
    anyone who can write an object can set them."""
    return any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or [])


_CONFLICT_MANAGER = re.compile(r'conflict with "([^"]*)"')


def _conflicting_managers(exc: HTTPStatusError) -> set[str] | None:
    """Field managers a refused server-side apply names (409, FieldManagerConflict causes); None for any
    other error."""
    if _code(exc) != 409:
        return None
    try:
        causes = (exc.response.json().get("details") or {}).get("causes") or []
    except ValueError:
        return None
    found = {m.group(1) for c in causes if (m := _CONFLICT_MANAGER.search(c.get("message", "")))}
    return found or None


async def _server_side_apply(res: Any, manifest: Manifest, force: bool) -> None:
    meta = manifest["metadata"]
    await client().patch(
        res,
        meta["name"],
        manifest,
        namespace=meta["namespace"],
        patch_type=PatchType.APPLY,
        field_manager=FIELD_MANAGER,
        force=force,
    )


async def apply(manifest: Manifest, owner_uid: str) -> str:
    """Bring one child to ``manifest`` by server-side apply (field manager ``streamtrain-operator``, no
    force): keys we stop rendering are removed, fields other managers own (an autoscaler's replicas)
    are kept. Returns what happened.

    Only what this resource owns is touched: an existing object without an owner reference to
    ``owner_uid`` raises NameConflict and is neither read further nor written. A missing object is
    created by the same apply. (Between the read and the apply, an object created in that instant by
    someone else would be applied to; the read cannot be made atomic with the apply.)

    A refused apply whose only conflicting manager is our own name is repeated with force: operator
    versions before server-side apply wrote with merge patches (manager ``streamtrain-operator``, operation Update),
    and those fields become the apply's. Any other conflict raises FieldConflict; every other API
    error propagates, and kopf retries the handler (never log-and-continue).
    """
    res = resource(manifest["apiVersion"], manifest["kind"])
    meta = manifest["metadata"]
    existing = await get(manifest["apiVersion"], manifest["kind"], meta["name"], meta["namespace"])
    if existing is not None and not owned_by(existing, owner_uid):
        raise NameConflict(manifest, existing)
    try:
        await _server_side_apply(res, manifest, force=False)
    except HTTPStatusError as exc:
        managers = _conflicting_managers(exc)
        if managers is None:
            raise
        if managers != {FIELD_MANAGER}:
            raise FieldConflict(
                f"{manifest['kind']}/{meta['name']}: fields set to other values by {', '.join(sorted(managers))}; "
                "not forced"
            ) from exc
        await _server_side_apply(res, manifest, force=True)
    return "created" if existing is None else "applied"


async def create_secret_once(manifest: Manifest) -> str:
    """Create a Secret, or keep the one that already has its name: "created" or "kept".

    Create only, on purpose, and not ``apply``: the operator may not read Secrets (its RBAC grants only
    ``create`` on them), so it cannot check an existing one's owner, and it must never write one, since
    replacing a signing key would make running scorers refuse every later version. 409 AlreadyExists is
    the normal case after the first reconcile. The Secret's data never reaches a log line."""
    try:
        await client().create(cast(Secret, Secret.from_dict(manifest)))  # its namespace is in its metadata
    except HTTPStatusError as exc:
        if _code(exc) == 409:
            return "kept"
        raise
    return "created"


async def secret_name_taken(name: str, namespace: str) -> bool:
    """Whether a Secret named ``name`` exists, asked without reading Secrets: a dry-run create of an empty
    one (nothing is stored) answers 409 AlreadyExists. Spares making costly material that would be kept."""
    probe = cast(Secret, Secret.from_dict({"metadata": {"name": name, "namespace": namespace}}))
    try:
        await client().create(probe, dry_run=True)
    except HTTPStatusError as exc:
        if _code(exc) == 409:
            return True
        raise
    return False


async def get(api_version: str, kind: str, name: str, namespace: str) -> Manifest | None:
    try:
        obj = await client().get(resource(api_version, kind), name, namespace=namespace)
    except HTTPStatusError as exc:
        if _code(exc) == 404:
            return None
        raise
    return obj.to_dict()


async def owned(namespace: str, instance: str, uid: str) -> list[Manifest]:
    """Every child of one StreamingTraining: listed by the labels this operator sets (one list per kind),
    kept only with an owner reference to ``uid``. The labels narrow the lists; ownership is the UID,
    since anyone who can write an object can label it (and pruning deletes what this returns).

    A kind the cluster does not serve (404: KEDA or Strimzi not installed) has no objects: a pipeline
    that needs none of them must not fail for their absence."""
    selector: dict[str, Any] = {"app.kubernetes.io/instance": instance, "app.kubernetes.io/managed-by": FIELD_MANAGER}
    out = []
    for api_version, kinds in KINDS.items():
        for kind in kinds:
            try:
                found = [
                    obj
                    async for obj in client().list(resource(api_version, kind), namespace=namespace, labels=selector)
                ]
            except HTTPStatusError as exc:
                if _code(exc) != 404:
                    raise
                continue
            for obj in found:
                d = obj.to_dict()
                if not selector.items() <= (d["metadata"].get("labels") or {}).items():
                    continue  # the server filtered already; this keeps the contract without relying on it
                if not owned_by(d, uid):
                    continue  # our labels on someone else's object: not ours to prune or report
                d.setdefault("apiVersion", api_version)
                d.setdefault("kind", kind)
                out.append(d)
    return out


async def delete(manifest: Manifest) -> None:
    try:
        await client().delete(
            resource(manifest["apiVersion"], manifest["kind"]),
            manifest["metadata"]["name"],
            namespace=manifest["metadata"]["namespace"],
            cascade=CascadeType.BACKGROUND,  # a Job's Pods too (the API's default for Jobs orphans them)
        )
    except HTTPStatusError as exc:
        if _code(exc) != 404:  # already gone is what we wanted
            raise


@cache
def custom_resource():
    return create_namespaced_resource(GROUP, VERSION, KIND, CR_PLURAL)


async def streaming_trainings(namespaces: list[str] | tuple[str, ...] = ()) -> list[Manifest]:
    """Every StreamingTraining in ``namespaces``, or in all of them when none is named (a namespace-scoped
    install may list only its own: one list each)."""
    out = []
    for namespace in namespaces or ("*",):
        out += [obj.to_dict() async for obj in client().list(custom_resource(), namespace=namespace)]
    return out


async def patch_status(namespace: str, name: str, status: dict) -> None:
    """Merge-patch the status subresource (a None value removes that key). Gone already: nothing to do."""
    try:
        await client().patch(
            custom_resource().Status, name, {"status": status}, namespace=namespace, patch_type=PatchType.MERGE
        )
    except HTTPStatusError as exc:
        if _code(exc) != 404:
            raise


async def endpoint_addresses(namespace: str, service: str) -> list[str]:
    """Addresses of the ready endpoints of a Service, from its EndpointSlices."""
    out = []
    async for eps in client().list(EndpointSlice, namespace=namespace, labels={"kubernetes.io/service-name": service}):
        for ep in eps.endpoints or []:
            if ep.conditions is None or ep.conditions.ready is not False:
                out += ep.addresses
    return out
