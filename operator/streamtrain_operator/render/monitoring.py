"""What Prometheus and the operator's status loop read: the metrics Services."""

from __future__ import annotations

from streamtrain.operator.render.objects import METRICS_PORT, Manifest, service


def metrics_services(name: str, namespace: str) -> list[Manifest]:
    """/metrics of every program of this pipeline (the chart's ServiceMonitor selects it), and of the
    scorers alone, where the operator reads the model version and anomaly rate for the status."""
    port = [{"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"}]
    every = service(name, namespace, "metrics", port)
    every["spec"]["selector"] = {"app.kubernetes.io/name": "streamtrain", "app.kubernetes.io/instance": name}
    every["spec"]["clusterIP"] = "None"  # headless: Prometheus scrapes each Pod, not a random one
    return [every, service(name, namespace, "scorer", port)]
