"""HTML report of a run: training loss per version, anomaly score over time with the true
anomalies marked, quality per model version, and quality per device, device type and baseline
(precision, recall, F1, false- and missed-alarm rates). Plots are embedded PNGs (one file to share)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from jinja2 import Template  # noqa: E402

from streamtrain.quality import Evaluation, format_trained_on  # noqa: E402

PAGE = Template("""<!doctype html>
<html><head><meta charset="utf-8"><title>{{ title }}</title>
<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}img{max-width:100%}</style></head>
<body><h1>{{ title }}</h1>
<h2>Quality per model version</h2>
<table><tr><th>model</th>{% for c in cols %}<th>{{ c }}</th>{% endfor %}</tr>
{% for name, row in rows %}<tr><td>{{ name }}</td>{% for c in cols %}<td>{{ row[c] }}</td>{% endfor %}</tr>{% endfor %}
</table><p>unlabelled: {{ ev.unlabelled }}, duplicate scores: {{ ev.duplicates }}, scored readings left out
because the version that scored them trained on them: {{ trained_on }}</p>
{% for heading, first, table in breakdowns %}<h2>{{ heading }}</h2>
<table><tr><th>{{ first }}</th>{% for c in cols %}<th>{{ c }}</th>{% endfor %}</tr>
{% for name, row in table %}<tr><td>{{ name }}</td>{% for c in cols %}<td>{{ row[c] }}</td>{% endfor %}</tr>{% endfor %}
</table>{% endfor %}
<h2>Model versions</h2>
<table><tr><th>version</th><th>parent</th><th>records</th><th>threshold</th><th>source offsets</th></tr>
{% for m in models %}<tr><td>{{ m.get('version') }}</td><td>{{ m.get('parent_version') }}</td>
<td>{{ m.get('record_count') }}</td><td>{{ '%.4g' % m.get('threshold', 0) }}</td>
<td style="text-align:left"><code>{{ m.get('source') }}</code></td></tr>{% endfor %}</table>
{% for caption, png in plots %}<h2>{{ caption }}</h2><img src="data:image/png;base64,{{ png }}">{% endfor %}
</body></html>""")

COLS = ("records", "anomalies", "precision", "recall", "f1", "false_alarm_rate", "missed_alarm_rate")


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _loss_history(meta: dict) -> tuple[list, list]:
    metrics = meta.get("metrics") or meta.get("training_metrics") or {}
    loss = metrics.get("loss") or metrics.get("train_loss") or []
    val = metrics.get("val_loss") or metrics.get("validation_loss") or []
    return list(loss), list(val)


def write_report(directory: Path, scores: list[dict], ev: Evaluation, models: list[dict], title: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    plots = []
    fig, ax = plt.subplots(figsize=(9, 3.5))
    drew = False
    for m in models:
        loss, val = _loss_history(m)
        if loss:
            ax.plot(range(1, len(loss) + 1), loss, label=f"v{m.get('version')} train")
            drew = True
        if val:
            ax.plot(range(1, len(val) + 1), val, "--", label=f"v{m.get('version')} validation")
    if drew:
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.set_yscale("log")
        ax.legend()
        plots.append(("Training loss", _png(fig)))
    else:
        plt.close(fig)

    devices = sorted({s.get("device_id") for s in scores if s.get("device_id")})[:3]
    if devices:
        fig, axes = plt.subplots(len(devices), 1, figsize=(10, 2.6 * len(devices)), sharex=True, squeeze=False)
        for ax, dev in zip(axes[:, 0], devices):
            rows = sorted((s for s in scores if s.get("device_id") == dev), key=lambda s: s.get("seq", 0))
            seq = [r.get("seq") for r in rows]
            ax.plot(seq, [r.get("score") for r in rows], lw=0.8, label="anomaly score")
            ax.plot(seq, [r.get("threshold") for r in rows], "k--", lw=0.8, label="threshold")
            truth = [r.get("seq") for r in rows if r.get("label")]
            if truth:
                ax.scatter(
                    truth,
                    [r.get("score") for r in rows if r.get("label")],
                    c="red",
                    s=12,
                    label="true anomaly",
                    zorder=3,
                )
            switches = [
                b.get("seq") for a, b in zip(rows, rows[1:]) if a.get("model_version") != b.get("model_version")
            ]
            for x in switches:
                ax.axvline(x, color="green", lw=1)
            ax.set_yscale("log")
            ax.set_title(dev, fontsize=9)
        axes[0, 0].legend(fontsize=8)
        axes[-1, 0].set_xlabel("seq (green line: model switch)")
        plots.append(("Anomaly score over time", _png(fig)))

    if ev.by_version:
        fig, ax = plt.subplots(figsize=(7, 3))
        versions = sorted(v for v in ev.by_version if v is not None)
        width = 0.25
        for i, metric in enumerate(("precision", "recall", "f1")):
            ax.bar(
                [v + (i - 1) * width for v in versions],
                [getattr(ev.by_version[v], metric) for v in versions],
                width,
                label=metric,
            )
        ax.set_xticks(versions, [f"v{v}" for v in versions]), ax.set_ylim(0, 1.05), ax.legend()
        plots.append(("Quality per model version", _png(fig)))

    if ev.by_device:
        plots.append(("Quality per device", _per_device_plot(ev)))

    table = [(f"v{v}", q.as_dict()) for v, q in sorted(ev.by_version.items(), key=lambda kv: (kv[0] is None, kv[0]))]
    table.append(("all", ev.overall.as_dict()))
    breakdowns = [
        (heading, first, [(str(k), q.as_dict()) for k, q in sorted(groups.items(), key=lambda kv: str(kv[0]))])
        for heading, first, groups in (
            ("Quality per device type", "type", ev.by_device_type),
            ("Quality per baseline (which normalization scored)", "baseline", ev.by_baseline),
            ("Quality per device", "device", ev.by_device),
        )
        if groups
    ]
    path = directory / "index.html"
    path.write_text(
        PAGE.render(
            title=title,
            cols=COLS,
            rows=table,
            ev=ev,
            models=models,
            plots=plots,
            breakdowns=breakdowns,
            trained_on=format_trained_on(ev).split("=", 1)[1],
        )
    )
    return path


def _per_device_plot(ev: Evaluation) -> str:
    """F1, recall and precision per device (bars) and false-/missed-alarm rates (markers)."""
    devices = sorted(ev.by_device, key=str)
    q = [ev.by_device[d] for d in devices]
    x = list(range(len(devices)))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(7, 0.35 * len(devices)), 5.5), sharex=True)
    width = 0.27
    for i, metric in enumerate(("precision", "recall", "f1")):
        top.bar([v + (i - 1) * width for v in x], [getattr(r, metric) for r in q], width, label=metric)
    top.set_ylim(0, 1.05), top.legend(fontsize=8, ncol=3), top.set_ylabel("share")
    bottom.plot(x, [r.false_alarm_rate for r in q], "o", label="false-alarm rate (normal readings flagged)")
    bottom.plot(x, [r.missed_alarm_rate for r in q], "x", label="missed-alarm rate (anomalies not flagged)")
    bottom.set_ylim(-0.02, 1.02), bottom.legend(fontsize=8), bottom.set_ylabel("rate")
    bottom.set_xticks(x, [str(d) for d in devices], rotation=90, fontsize=7)
    return _png(fig)
