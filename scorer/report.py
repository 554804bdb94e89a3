"""HTML report of a run, one static file to open offline (plots are embedded PNGs, the little script inline):
run metadata, confusion counts and quality per model version, the threshold trade-off per version, the worst
devices first, every device's anomaly score over event time (UTC) with its labels, alarms and threshold, and
quality per device type and baseline. Every figure is ``streamtrain.quality``'s: the counts are the
``Evaluation`` that ``evaluate`` printed, and the curves use the same held-out readings (``quality.sort_scores``)."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment

from streamtrain.quality import (
    DUPLICATE,
    TRAINED_ON,
    Evaluation,
    Quality,
    TrainingRanges,
    counted,
    format_trained_on,
    sort_scores,
    training_ranges,
)
from streamtrain.scorer import report_plots as plots
from streamtrain.scorer.report_svg import Series, score_svg

#: Devices drawn together at the top (the worst first); every device has its own plot further down.
WORST_SHOWN = 9
RATES = ("precision", "recall", "f1", "false_alarm_rate", "missed_alarm_rate")
COUNTS = ("records", "anomalies", "tp", "fp", "tn", "fn")

PAGE = Environment(autoescape=True).from_string("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title><link rel="icon" href="data:,">
<style>
body{font-family:sans-serif;max-width:1150px;margin:1.5em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3}td.name,th.name{text-align:left}th[data-sort]{cursor:pointer}img{max-width:100%}
.scroll{max-height:28em;overflow:auto;border:1px solid #ddd;display:inline-block}
.meta td{text-align:left}.devices{columns:9em;font-size:90%}nav a{margin-right:1em}
section.device{border-top:1px solid #ddd;padding-top:.3em}
.grid{display:grid;grid-template-columns:1fr 1fr 1fr;gap:.5em}.grid figure{margin:0;font-size:85%}
</style></head>
<body><h1>{{ title }}</h1>
<nav><a href="#run">Run</a><a href="#versions">Model versions</a><a href="#quality">Quality</a>
<a href="#tradeoff">Threshold trade-off</a><a href="#worst">Worst devices</a><a href="#scores">Scores per device</a></nav>

<h2 id="run">Run</h2>
<table class="meta" id="run-meta">
{% for k, v in meta %}<tr><th class="name">{{ k }}</th><td>{{ v }}</td></tr>
{% endfor %}</table>

<h2 id="versions">Model versions</h2>
<table id="versions-table"><tr><th>version</th><th>parent</th><th class="name">created (UTC)</th>
<th class="name">training range (partition: offsets, end exclusive)</th><th>training records</th>
<th>threshold</th><th class="name">training health</th><th>held-out readings</th><th>trained on (left out)</th></tr>
{% for m in versions %}<tr><td>{{ m.version }}</td><td>{{ m.parent }}</td><td class="name">{{ m.created }}</td>
<td class="name">{{ m.range }}</td><td>{{ m.records }}</td><td>{{ m.threshold }}</td>
<td class="name">{{ m.health }}</td><td>{{ m.counted }}</td><td>{{ m.trained_on }}</td></tr>
{% endfor %}</table>

<h2 id="quality">Confusion counts and quality per model version</h2>
<p>Held-out, labelled readings only, the first score of each reading: the figures <code>streamtrain evaluate</code>
prints. TP: alarms on anomalies; FP: alarms on normal readings; TN: normal readings left alone; FN: anomalies
missed.</p>
<table id="confusion"><tr><th class="name">model</th>{% for c in cols %}<th>{{ c }}</th>{% endfor %}</tr>
{% for name, key, row in per_version %}<tr data-version="{{ key }}"><td class="name">{{ name }}</td>
{% for c in cols %}<td class="{{ c }}">{{ row[c] }}</td>{% endfor %}</tr>
{% endfor %}</table>
<p>Unlabelled: {{ ev.unlabelled }}; duplicate scores: {{ ev.duplicates }}; scored readings left out because
the version that scored them trained on them: {{ trained_on }}.</p>
{% for heading, first, table in breakdowns %}<h3>{{ heading }}</h3>
<table><tr><th class="name">{{ first }}</th>{% for c in cols %}<th>{{ c }}</th>{% endfor %}</tr>
{% for name, row in table %}<tr><td class="name">{{ name }}</td>{% for c in cols %}<td>{{ row[c] }}</td>{% endfor %}</tr>
{% endfor %}</table>{% endfor %}

<h2 id="tradeoff">Threshold trade-off</h2>
{% if tradeoff %}<p>Precision, recall and false-alarm rate of each version's held-out readings had each alarmed
at score &gt; factor &times; the threshold applied to it (the model's, or the device's own baseline's). Factor 1 is
the scorer's rule; the dots are the counted figures above (they sit off the curve when smoothing decided).</p>
<img id="tradeoff-plot" alt="threshold trade-off per model version" src="data:image/png;base64,{{ tradeoff }}">
{% else %}<p>No held-out labelled readings: nothing to trade off.</p>{% endif %}

<h2 id="worst">Worst devices first</h2>
<p>{{ devices|length }} devices, sorted by F1 (lowest first), then false-alarm rate and missed anomalies;
a device with nothing to catch and no alarm sorts last. Click a heading to sort by it; the name opens the
device's plot.</p>
{% if spread %}<img id="spread-plot" alt="F1 and false-alarm rate per device, sorted"
src="data:image/png;base64,{{ spread }}">{% endif %}
<div class="scroll"><table id="devices-table"><thead><tr><th class="name" data-sort="text">device</th>
<th class="name" data-sort="text">type</th>{% for c in cols %}<th data-sort="num">{{ c }}</th>{% endfor %}</tr></thead>
<tbody>{% for d in devices %}<tr data-device="{{ d.name }}"><td class="name"><a href="#{{ d.anchor }}">{{ d.name }}</a></td>
<td class="name">{{ d.type }}</td>{% for c in cols %}<td class="{{ c }}">{{ d.row[c] }}</td>{% endfor %}</tr>
{% endfor %}</tbody></table></div>

<h2 id="scores">Anomaly score over time (UTC)</h2>
<p>Each device's first score per reading against its event time: the dashed line is the threshold applied,
red dots the true anomalies (label), orange circles the alarms raised, green lines a model switch; grey dots
are readings the scoring version trained on (not counted).</p>
{% if worst %}<h3>The {{ worst|length }} worst devices</h3><div class="grid" id="worst-grid">
{% for d in worst %}<figure><figcaption><a href="#{{ d.anchor }}">{{ d.name }}</a>: F1 {{ d.row.f1 }},
false-alarm rate {{ d.row.false_alarm_rate }}</figcaption>
<img alt="score over time of {{ d.name }}" src="data:image/svg+xml;base64,{{ d.plot }}"></figure>
{% endfor %}</div>{% endif %}
<h3>Every device</h3>
<p><label>Go to a device: <select id="device-select" onchange="if(this.value)location.hash=this.value">
<option value="">(choose; worst first)</option>
{% for d in devices if d.plot %}<option value="{{ d.anchor }}">{{ d.name }}</option>{% endfor %}
</select></label></p>
<details><summary>All devices by name</summary><div class="devices">
{% for d in by_name if d.plot %}<a href="#{{ d.anchor }}">{{ d.name }}</a><br>{% endfor %}</div></details>
{% for d in devices if d.plot %}<section class="device" id="{{ d.anchor }}"><h4>{{ d.name }}</h4>
<p>{{ d.summary }}</p><img alt="score over time of {{ d.name }}" src="data:image/svg+xml;base64,{{ d.plot }}">
</section>
{% endfor %}
{% if loss %}<h2 id="loss">Training loss</h2><img alt="training loss per version" src="data:image/png;base64,{{ loss }}">
{% endif %}
<p>Generated {{ generated }} by StreamTrain.</p>
<script>
document.querySelectorAll("th[data-sort]").forEach(function (th) {
  th.addEventListener("click", function () {
    var table = th.closest("table"), body = table.tBodies[0], i = th.cellIndex;
    var num = th.dataset.sort === "num", dir = th.dataset.dir === "asc" ? -1 : 1;
    th.dataset.dir = dir === 1 ? "asc" : "desc";
    Array.from(body.rows).sort(function (a, b) {
      var x = a.cells[i].textContent, y = b.cells[i].textContent;
      if (!num) return dir * x.localeCompare(y);
      x = parseFloat(x); y = parseFloat(y);  /* a dash (nothing counted) sorts last either way */
      if (isNaN(x) || isNaN(y)) return (isNaN(x) ? 1 : 0) - (isNaN(y) ? 1 : 0);
      return dir * (x - y);
    }).forEach(function (r) { body.appendChild(r); });
  });
});
</script>
</body></html>""")


def _utc(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts)) if isinstance(ts, int | float) else "—"


def _text(value: object) -> str:
    return "—" if value is None or value == "" else str(value)


def _row(q: Quality) -> dict[str, str]:
    """``Quality.as_dict`` (the numbers evaluate prints), rates with their four decimals always shown."""
    d = q.as_dict()
    return {**{c: str(d[c]) for c in COUNTS}, **{c: f"{d[c]:.4f}" for c in RATES}}


def _badness(q: Quality | None) -> tuple:
    if q is None:  # no held-out labelled reading: nothing to judge
        return (2.0, 0.0, 0)
    nothing = q.tp + q.fn + q.fp == 0
    return (1.0 if nothing else q.f1, -q.false_alarm_rate, -q.fn)


def _range(source: object, ranges: dict[int, tuple[int, int]] | None) -> str:
    if not ranges:
        return "—"
    topic = source.get("topic") if isinstance(source, dict) else None
    parts = ", ".join(f"{p}: {a}–{b}" for p, (a, b) in sorted(ranges.items()))
    return f"{topic} {parts}" if topic else parts


def _health(h: object) -> str:
    if not isinstance(h, dict):
        return "unknown"
    status = str(h.get("status") or "unknown")
    problems = h.get("problems") or []
    return status + (f" ({'; '.join(str(p) for p in problems)})" if problems else "")


def _versions(models: list[dict], ev: Evaluation, ranges: dict) -> list[dict]:
    known = {m.get("version"): m for m in models if isinstance(m.get("version"), int)}
    out = []
    for v in sorted({*known, *(k for k in ev.by_version if k is not None), *ev.trained_on}):
        m = known.get(v, {})
        threshold = m.get("threshold")
        out.append(
            {
                "version": f"v{v}",
                "parent": f"v{m['parent_version']}" if isinstance(m.get("parent_version"), int) else "—",
                "created": _utc(m.get("created_at")),
                "range": _range(m.get("source"), ranges.get(v)),
                "records": _text(m.get("record_count")),
                "threshold": f"{threshold:.4g}" if isinstance(threshold, int | float) else "—",
                "health": _health(m.get("training_health")) if m else "no manifest",
                "counted": ev.by_version[v].records if v in ev.by_version else 0,
                "trained_on": ev.trained_on.get(v, 0),
            }
        )
    return out


def write_report(directory: Path, scores: list[dict], ev: Evaluation, models: list[dict], title: str) -> Path:
    """``ev``: ``quality.evaluate(scores, training=training_ranges(models))``, as evaluate and demo compute it."""
    directory.mkdir(parents=True, exist_ok=True)
    ranges = training_ranges(models)
    series: defaultdict[str, Series] = defaultdict(Series)
    device_type: dict[str, str] = {}
    first_ts: list[float] = []
    unplaced = 0
    for kind, s in sort_scores(scores, ranges):
        if kind == DUPLICATE:
            continue
        dev, ts = s.get("device_id"), s.get("ts")
        if dev is None or not isinstance(ts, int | float):
            unplaced += 1  # counted as evaluate counts it, but nowhere to draw it
            continue
        first_ts.append(ts)
        if s.get("device_type") is not None:
            device_type[dev] = str(s["device_type"])
        row = series[dev]
        row.ts.append(float(ts))
        row.score.append(float(s.get("score") or 0.0))
        row.threshold.append(float(s.get("threshold") or 0.0))
        row.label.append(bool(s.get("label")))
        row.alarm.append(bool(s.get("is_anomaly")))
        row.counted.append(kind != TRAINED_ON)
        row.version.append(s.get("model_version"))
    for row in series.values():
        row.sort()

    names = sorted({*series, *(str(d) for d in ev.by_device if d is not None)}, key=str)
    ranked = sorted(names, key=lambda d: (_badness(ev.by_device.get(d)), d))
    anchors = {d: f"device-{i}" for i, d in enumerate(ranked, 1)}

    devices: list[dict[str, Any]] = []
    for d in ranked:
        q = ev.by_device.get(d)
        own = series.get(d)
        devices.append(
            {
                "name": d,
                "anchor": anchors[d],
                "type": device_type.get(d, "—"),
                "row": _row(q) if q else dict.fromkeys((*COUNTS, *RATES), "—"),
                "summary": _summary(q, own),
                "plot": score_svg(own) if own and own.ts else None,
            }
        )
    worst = [d for d in devices[:WORST_SHOWN] if d["plot"] and ev.by_device.get(d["name"])]

    per_version = [
        (f"v{v}", str(v), _row(q)) for v, q in sorted(ev.by_version.items(), key=lambda kv: (kv[0] is None, kv[0]))
    ]
    per_version.append(("all", "all", _row(ev.overall)))
    curves = []
    counts = tradeoff_counts(scores, ranges)
    for v, q in sorted(ev.by_version.items(), key=lambda kv: (kv[0] is None, kv[0])):
        if v not in counts:
            continue
        manifest_threshold = next((m.get("threshold") for m in models if m.get("version") == v), None)
        curves.append(
            (
                f"v{v}",
                counts[v],
                (q.precision, q.recall, q.false_alarm_rate),
                manifest_threshold if isinstance(manifest_threshold, int | float) else None,
            )
        )
    judged = [ev.by_device[d] for d in names if d in ev.by_device]
    breakdowns = [
        (heading, first, [(str(k), _row(q)) for k, q in sorted(groups.items(), key=lambda kv: str(kv[0]))])
        for heading, first, groups in (
            ("Quality per device type", "type", ev.by_device_type),
            ("Quality per baseline (which normalization scored)", "baseline", ev.by_baseline),
        )
        if groups
    ]
    generated = _utc(time.time())
    meta = [
        ("generated", generated),
        ("data window (event time)", f"{_utc(min(first_ts, default=None))} to {_utc(max(first_ts, default=None))}"),
        ("devices", len(names)),
        ("model versions", ", ".join(m["version"] for m in _versions(models, ev, ranges)) or "—"),
        ("scores read", len(scores)),
        ("held-out labelled readings counted", ev.overall.records),
        ("unlabelled / duplicate scores", f"{ev.unlabelled} / {ev.duplicates}"),
        ("left out: the scoring version trained on them", sum(ev.trained_on.values())),
        ("readings without a device or event time (in the counts, in no plot)", unplaced),
    ]
    path = directory / "index.html"
    path.write_text(
        PAGE.render(
            title=title,
            meta=meta,
            versions=_versions(models, ev, ranges),
            cols=(*COUNTS, *RATES),
            per_version=per_version,
            ev=ev,
            trained_on=format_trained_on(ev).split("=", 1)[1],
            breakdowns=breakdowns,
            tradeoff=plots.tradeoff_plot(curves) if curves else None,
            devices=devices,
            by_name=sorted(devices, key=lambda d: d["name"]),
            spread=plots.spread_plot(
                [q.f1 for q in judged], [q.false_alarm_rate for q in judged], [q.tp + q.fn > 0 for q in judged]
            )
            if judged
            else None,
            worst=worst,
            loss=plots.loss_plot([(f"v{m.get('version')}", *_loss_history(m)) for m in models]),
            generated=generated,
        ),
        encoding="utf-8",
    )
    return path


def tradeoff_counts(scores: list[dict], ranges: TrainingRanges) -> dict[int | None, dict[str, np.ndarray]]:
    """Per version, the confusion counts of its counted readings (``quality.counted``: the ones evaluate
    counts) at each of ``report_plots.THRESHOLD_FACTORS`` x the threshold applied to each reading."""
    ratios: defaultdict[int | None, list[float]] = defaultdict(list)
    labels: defaultdict[int | None, list[bool]] = defaultdict(list)
    for s in counted(scores, ranges):
        score, threshold = float(s.get("score") or 0.0), float(s.get("threshold") or 0.0)
        ratios[s.get("model_version")].append(score / threshold if threshold > 0 else float("inf"))
        labels[s.get("model_version")].append(bool(s["label"]))
    return {v: plots.tradeoff(np.asarray(r), np.asarray(labels[v], dtype=bool)) for v, r in ratios.items()}


def _summary(q: Quality | None, s: Series | None) -> str:
    readings = len(s.ts) if s else 0
    if q is None:
        return f"{readings} readings plotted; none held out and labelled, so none counted."
    d = q.as_dict()
    return (
        f"{readings} readings plotted, {q.records} counted: TP {q.tp}, FP {q.fp}, TN {q.tn}, FN {q.fn}; "
        f"precision {d['precision']:.4f}, recall {d['recall']:.4f}, F1 {d['f1']:.4f}, "
        f"false-alarm rate {d['false_alarm_rate']:.4f}."
    )


def _loss_history(meta: dict) -> tuple[list, list]:
    metrics = meta.get("metrics") or meta.get("training_metrics") or {}
    loss = metrics.get("loss") or metrics.get("train_loss") or []
    val = metrics.get("val_loss") or metrics.get("validation_loss") or []
    return list(loss), list(val)
