"""Detection quality of scores against ground-truth labels: precision, recall, F1, alarm rates."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

#: {model version: {partition: (start, end)}}: the offsets each version trained on (end exclusive).
TrainingRanges = dict[int, dict[int, tuple[int, int]]]


@dataclass
class Quality:
    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0

    def add(self, predicted: bool, actual: bool) -> None:
        if predicted and actual:
            self.tp += 1
        elif predicted:
            self.fp += 1
        elif actual:
            self.fn += 1
        else:
            self.tn += 1

    @property
    def records(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def false_alarm_rate(self) -> float:
        """Share of normal readings flagged."""
        return self.fp / (self.fp + self.tn) if self.fp + self.tn else 0.0

    @property
    def missed_alarm_rate(self) -> float:
        """Share of anomalous readings not flagged."""
        return self.fn / (self.fn + self.tp) if self.fn + self.tp else 0.0

    def as_dict(self) -> dict:
        return {
            "records": self.records,
            "anomalies": self.tp + self.fn,
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "tn": self.tn,
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "f1": round(self.f1, 4),
            "false_alarm_rate": round(self.false_alarm_rate, 4),
            "missed_alarm_rate": round(self.missed_alarm_rate, 4),
        }


@dataclass
class Evaluation:
    overall: Quality
    by_version: dict[int, Quality]
    by_device: dict[str, Quality]
    unlabelled: int
    duplicates: int
    by_baseline: dict[str, Quality] = field(default_factory=dict)  # device / warmup / fallback / global
    by_device_type: dict[str, Quality] = field(default_factory=dict)
    #: Scored readings left out because the version that scored them trained on them, per version.
    trained_on: dict[int, int] = field(default_factory=dict)


def training_ranges(manifests: Iterable[dict]) -> TrainingRanges:
    """Each version's training range from its manifest's ``source`` (the exact partitions and offsets the
    trainer read); a manifest without one contributes nothing."""
    out: TrainingRanges = {}
    for meta in manifests:
        source = meta.get("source")
        if not isinstance(source, dict) or not isinstance(source.get("partitions"), dict):
            continue
        try:
            out[int(meta["version"])] = {int(p): (int(r[0]), int(r[1])) for p, r in source["partitions"].items()}
        except (KeyError, TypeError, ValueError, IndexError):
            continue
    return out


def in_training_range(score: dict, ranges: TrainingRanges) -> bool:
    """Did the version that wrote ``score`` train on the reading it scored? The score's ``source`` (partition,
    offset of its input) inside that version's range. The scorer reads the topic its version's input kind
    names, the topic the trainer read for that kind, so partition and offset are enough."""
    version, source = score.get("model_version"), score.get("source")
    own = ranges.get(version) if isinstance(version, int) else None
    if not own or not isinstance(source, dict):
        return False
    partition, offset = source.get("partition"), source.get("offset")
    span = own.get(partition) if isinstance(partition, int) else None
    return span is not None and isinstance(offset, int) and span[0] <= offset < span[1]


DUPLICATE, TRAINED_ON, UNLABELLED, COUNTED = "duplicate", "trained_on", "unlabelled", "counted"


def sort_scores(scores: Iterable[dict], training: TrainingRanges | None = None) -> Iterator[tuple[str, dict]]:
    """Each score with what ``evaluate`` makes of it: a later score of the same (device_id, seq) is a
    ``DUPLICATE``; a first one its version trained on (``training``) ``TRAINED_ON``; one without a label
    ``UNLABELLED``; the rest ``COUNTED`` (the held-out, labelled readings every figure is computed from)."""
    seen: set = set()
    for s in scores:
        key = (s.get("device_id"), s.get("seq"))
        if key in seen:
            yield DUPLICATE, s
            continue
        seen.add(key)
        if training and in_training_range(s, training):
            yield TRAINED_ON, s
        elif s.get("label") is None:
            yield UNLABELLED, s
        else:
            yield COUNTED, s


def counted(scores: Iterable[dict], training: TrainingRanges | None = None) -> Iterator[dict]:
    """The scores ``evaluate`` counts (held-out, labelled, first per reading), in their order."""
    return (s for kind, s in sort_scores(scores, training) if kind == COUNTED)


def evaluate(scores: Iterable[dict], skip_warmup: bool = True, training: TrainingRanges | None = None) -> Evaluation:
    """Quality of score records (first score per (device_id, seq) counts; later ones are duplicates), read
    once as they come: ``scores`` may be a stream that is never held.

    ``training``: each version's training range (``training_ranges``); a first score inside the range of
    the version that wrote it is not counted (quality on held-out readings only) but counted in
    ``trained_on``."""
    overall = Quality()
    by_version: defaultdict[int | None, Quality] = defaultdict(Quality)
    by_device: defaultdict[str, Quality] = defaultdict(Quality)
    by_baseline: defaultdict[str, Quality] = defaultdict(Quality)
    by_type: defaultdict[str, Quality] = defaultdict(Quality)
    unlabelled = duplicates = 0
    trained_on: defaultdict[int, int] = defaultdict(int)
    for kind, s in sort_scores(scores, training):
        if kind == DUPLICATE:
            duplicates += 1
            continue
        if kind == TRAINED_ON:
            trained_on[s["model_version"]] += 1
            continue
        if kind == UNLABELLED:
            unlabelled += 1
            continue
        predicted, actual = bool(s.get("is_anomaly")), bool(s["label"])
        overall.add(predicted, actual)
        by_version[s.get("model_version")].add(predicted, actual)
        by_device[s.get("device_id")].add(predicted, actual)
        by_baseline[s.get("baseline") or "global"].add(predicted, actual)
        if s.get("device_type") is not None:
            by_type[s["device_type"]].add(predicted, actual)
    return Evaluation(
        overall,
        dict(by_version),
        dict(by_device),
        unlabelled,
        duplicates,
        dict(by_baseline),
        dict(by_type),
        dict(sorted(trained_on.items())),
    )


COLUMNS = ("records", "anomalies", "precision", "recall", "f1", "false_alarm_rate", "missed_alarm_rate")


def _rows(title: str, rows: list[tuple[str, Quality]], width: int) -> list[str]:
    head = f"{title:>{width}} " + " ".join(f"{c:>17}" for c in COLUMNS)
    lines = [head, "-" * len(head)]
    for name, q in rows:
        d = q.as_dict()
        lines.append(f"{name:>{width}} " + " ".join(f"{d[c]:>17}" for c in COLUMNS))
    return lines


def format_devices(ev: Evaluation) -> str:
    """Quality per device, then per device type and per baseline kind (which normalization scored it)."""
    width = max([6] + [len(str(d)) for d in ev.by_device])
    lines = _rows("device", sorted(((str(d), q) for d, q in ev.by_device.items())), width)
    if ev.by_device_type:
        lines += [""] + _rows("type", sorted(ev.by_device_type.items()), width)
    if ev.by_baseline:
        lines += [""] + _rows("baseline", sorted(ev.by_baseline.items()), width)
    return "\n".join(lines)


def format_table(ev: Evaluation) -> str:
    cols = ("records", "anomalies", "precision", "recall", "f1", "false_alarm_rate", "missed_alarm_rate")
    head = f"{'model':>8} " + " ".join(f"{c:>17}" for c in cols)
    lines = [head, "-" * len(head)]
    rows = [(f"v{v}", q) for v, q in sorted(ev.by_version.items(), key=lambda kv: (kv[0] is None, kv[0]))]
    rows.append(("all", ev.overall))
    for name, q in rows:
        d = q.as_dict()
        lines.append(f"{name:>8} " + " ".join(f"{d[c]:>17}" for c in cols))
    lines.append(f"unlabelled={ev.unlabelled} duplicates={ev.duplicates} {format_trained_on(ev)}")
    return "\n".join(lines)


def format_trained_on(ev: Evaluation) -> str:
    """How many scored readings were left out because their version trained on them, in total and per version."""
    total = sum(ev.trained_on.values())
    per_version = ", ".join(f"v{v}: {n}" for v, n in ev.trained_on.items())
    return f"trained_on={total}" + (f" ({per_version}; not counted above)" if total else "")


def format_health(health: dict[int, dict]) -> str:
    """One line per model version: did its training converge and beat a constant predictor?"""
    lines = []
    for v, h in sorted(health.items()):
        if h.get("status") == "unknown":
            lines.append(f"v{v} training: unknown (its manifest has no training health)")
        elif h.get("status") == "ok":
            lines.append(f"v{v} training: ok (error {h.get('error_ratio')} x a constant predictor's)")
        else:
            lines.append(
                f"v{v} training: WARNING {h.get('status')}: "
                + "; ".join(h.get("problems") or ["no health in its manifest"])
            )
    return "\n".join(lines)
