"""The operator's few Kubernetes calls (lightkube, async: the event loop never blocks).

Configuration comes from the environment the way kopf's own login does: in-cluster ServiceAccount
first, then $KUBECONFIG (or ~/.kube/config) as the fallback on a laptop.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from httpx2 import HTTPStatusError  # the HTTP library lightkube 1.x is built on
from lightkube import AsyncClient, KubeConfig
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.discovery_v1 import EndpointSlice
from lightkube.types import PatchType

from streamtrain.operator import GROUP, KIND, VERSION
from streamtrain.operator import PLURAL as CR_PLURAL

Manifest = dict[str, Any]

#: Resource (plural) of every kind the operator renders; RBAC in the chart grants exactly these.
PLURAL = {
    "Deployment": "deployments",
    "Service": "services",
    "ConfigMap": "configmaps",
    "Job": "jobs",
    "CronJob": "cronjobs",
    "Kafka": "kafkas",
    "KafkaNodePool": "kafkanodepools",
    "KafkaTopic": "kafkatopics",
    "KafkaUser": "kafkausers",
    "PodDisruptionBudget": "poddisruptionbudgets",
    "ScaledObject": "scaledobjects",
    "TriggerAuthentication": "triggerauthentications",
}
#: Kind by apiVersion, for listing what already exists (pruning and readiness).
KINDS = {
    "v1": ("Service", "ConfigMap"),
    "apps/v1": ("Deployment",),
    "batch/v1": ("Job", "CronJob"),
    "policy/v1": ("PodDisruptionBudget",),
    "kafka.strimzi.io/v1": ("Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser"),
    "keda.sh/v1alpha1": ("ScaledObject", "TriggerAuthentication"),
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


async def apply(manifest: Manifest) -> str:
    """Merge-patch the child to the desired state, or create it when it does not exist yet. Returns
    what happened. Patch first: children exist on every reconcile but the first, so one call each.

    Any other API error propagates: kopf retries the handler (never log-and-continue).
    """
    res = resource(manifest["apiVersion"], manifest["kind"])
    meta = manifest["metadata"]
    try:
        await client().patch(res, meta["name"], manifest, namespace=meta["namespace"], patch_type=PatchType.MERGE)
        return "patched"
    except HTTPStatusError as exc:
        if _code(exc) != 404:
            raise
    # lightkube types create() per resource class; a generic resource built at run time matches none
    await client().create(res.from_dict(manifest), namespace=meta["namespace"])  # type: ignore[call-overload]
    return "created"


async def get(api_version: str, kind: str, name: str, namespace: str) -> Manifest | None:
    try:
        obj = await client().get(resource(api_version, kind), name, namespace=namespace)
    except HTTPStatusError as exc:
        if _code(exc) == 404:
            return None
        raise
    return obj.to_dict()


async def owned(namespace: str, instance: str) -> list[Manifest]:
    """Every child this operator labelled for one StreamingTraining (label selector, one list per kind).

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
        )
    except HTTPStatusError as exc:
        if _code(exc) != 404:  # already gone is what we wanted
            raise


@cache
def custom_resource():
    return create_namespaced_resource(GROUP, VERSION, KIND, CR_PLURAL)


async def streaming_trainings() -> list[Manifest]:
    """Every StreamingTraining in the namespaces the operator can list."""
    return [obj.to_dict() async for obj in client().list(custom_resource(), namespace="*")]


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
