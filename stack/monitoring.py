"""A real Prometheus (Debian's `prometheus` package) scraping the local pipeline, with StreamTrain's
alerting rules loaded: the same labels a Kubernetes ServiceMonitor gives the series (`namespace`,
`app_kubernetes_io_instance`, ...), added here by relabelling, so the chart's dashboard and
alerts work unchanged on a laptop.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from streamtrain.stack.processes import Service, StackError, port_open, spawn, stop

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "streamtrain"
#: The alerting rules: one file, used as is by a local Prometheus and embedded by the chart's PrometheusRule.
RULES = CHART / "rules" / "streamtrain-alerts.yaml"
DASHBOARD = CHART / "dashboards" / "streamtrain.json"
#: Where `stack up --monitoring` expects each program's /metrics (start them with --metrics-port <port>), and
#: where it has HiveMQ serve its own counters (StackSettings.broker_metrics_port).
LOCAL_PORTS = {"bridge": 9401, "preprocess": 9402, "scorer": 9403, "hivemq": 9404}
PROMETHEUS_PORT = 9090


@dataclass(frozen=True)
class Target:
    component: str  # bridge, preprocess or scorer: the label app_kubernetes_io_component
    port: int
    host: str = "127.0.0.1"


def prometheus_config(
    targets: list[Target],
    rule_files: list[Path],
    namespace: str = "local",
    instance: str = "local",
    interval: str = "15s",
) -> dict:
    """prometheus.yml: one scrape job over the programs' /metrics, relabelled like the chart's ServiceMonitor
    (targetLabels app.kubernetes.io/instance and part-of, podTargetLabels app.kubernetes.io/component)."""
    static = [
        {"targets": [f"{t.host}:{t.port}"], "labels": {"app_kubernetes_io_component": t.component}} for t in targets
    ]
    fixed = {"namespace": namespace, "app_kubernetes_io_instance": instance, "app_kubernetes_io_part_of": "streamtrain"}
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [
            {
                "job_name": "streamtrain",
                "metrics_path": "/metrics",
                "static_configs": static,
                "relabel_configs": [{"target_label": k, "replacement": v} for k, v in fixed.items()],
            }
        ],
    }


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if not path:
        raise StackError("prometheus is not on PATH; `bash .ci/install` installs Debian's prometheus package")
    return path


class LocalPrometheus:
    """One Prometheus process with its data, config and log under ``home``; detached, stopped by pid file."""

    def __init__(self, home: Path, port: int = PROMETHEUS_PORT) -> None:
        self.home = Path(home).resolve()
        self.service = Service("prometheus", port, self.home)
        self.dir = self.home / "prometheus"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.service.port}"

    def start(self, config: dict, timeout: float = 60.0) -> None:
        """Write the config and start Prometheus unless it runs already (then reload the config)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        config_file = self.dir / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        if self.service.pid():
            self._post("/-/reload")
            return
        if port_open(self.service.port):
            raise StackError(f"port {self.service.port} is taken by another process; pick another Prometheus port")
        (self.dir / "port").write_text(str(self.service.port))
        spawn(
            self.service,
            [
                prometheus_binary(),
                f"--config.file={config_file}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                "--storage.tsdb.retention.time=2d",
                f"--web.listen-address=127.0.0.1:{self.service.port}",
                "--web.enable-lifecycle",
                "--log.format=json",
            ],
            cwd=self.dir,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready():
                return
            if self.service.pid() is None:
                tail = self.service.log_file.read_text(errors="replace")[-3000:]
                raise StackError(f"prometheus exited during start-up; last lines of {self.service.log_file}:\n{tail}")
            time.sleep(0.3)
        raise StackError(f"prometheus not ready on {self.url} after {timeout:.0f}s; see {self.service.log_file}")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        stop(self.service, timeout=30)

    def _post(self, path: str) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{self.url}{path}", method="POST"), timeout=10).read()

    def api(self, path: str, **params) -> dict:
        """GET /api/v1/<path>; raises StackError unless Prometheus answers status success."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
        if body.get("status") != "success":
            raise StackError(f"Prometheus refused {path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        """An instant query's vector: [{"metric": {...}, "value": [t, "1.5"]}, ...]."""
        return self.api("query", query=expr)["result"]

    def status(self) -> dict:
        return {"pid": self.service.pid(), "url": self.url, "ready": self.ready(), "log": str(self.service.log_file)}


def local_targets() -> list[Target]:
    return [Target(component, port) for component, port in LOCAL_PORTS.items()]


def running_prometheus(home: Path) -> LocalPrometheus | None:
    """The Prometheus `stack up --monitoring` started under ``home``, if it runs (on the port it recorded)."""
    prom = LocalPrometheus(home)
    if prom.service.pid() is None:
        return None
    port_file = prom.dir / "port"
    return LocalPrometheus(home, int(port_file.read_text())) if port_file.exists() else prom
