"""`helm test` check, stdlib only: from inside the cluster with the operator's ServiceAccount, ask the
API server whether the operator may do what it must (SelfSubjectAccessReview), check the CRD is
served, and check the operator answers on /healthz. Exit 0 on success, 1 with one line per failure."""

from __future__ import annotations

import json
import os
import ssl
import sys
import urllib.error
import urllib.request

SA = "/var/run/secrets/kubernetes.io/serviceaccount"
MUST = [
    ("streamtrain.io", "streamingtrainings", "watch"),
    ("streamtrain.io", "streamingtrainings", "patch"),
    ("apps", "deployments", "create"),
    ("batch", "jobs", "create"),
    ("kafka.strimzi.io", "kafkas", "create"),
]


def api(method: str, path: str, body: dict | None = None) -> dict:
    host = f"https://{os.environ['KUBERNETES_SERVICE_HOST']}:{os.environ['KUBERNETES_SERVICE_PORT']}"
    token = open(f"{SA}/token").read().strip()
    req = urllib.request.Request(
        host + path,
        method=method,
        data=json.dumps(body).encode() if body else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    ctx = ssl.create_default_context(cafile=f"{SA}/ca.crt")
    with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
        return json.load(resp)


def main() -> int:
    ns = os.environ.get("STREAMTRAIN_NAMESPACE", "default")
    failures = []
    for group, resource, verb in MUST:
        review = api(
            "POST",
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": {"group": group, "resource": resource, "verb": verb, "namespace": ns}},
            },
        )
        if not review["status"].get("allowed"):
            failures.append(f"operator may not {verb} {resource}.{group}")
    try:
        api("GET", f"/apis/streamtrain.io/v1alpha1/namespaces/{ns}/streamingtrainings")
    except urllib.error.HTTPError as exc:
        failures.append(f"StreamingTraining CRD not served: HTTP {exc.code}")
    health = os.environ.get("STREAMTRAIN_OPERATOR_HEALTH")
    if health:
        try:
            urllib.request.urlopen(health, timeout=10).read()
        except OSError as exc:
            failures.append(f"operator not live at {health}: {exc}")
    for f in failures:
        print(f, file=sys.stderr)
    print("ok" if not failures else f"{len(failures)} check(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
