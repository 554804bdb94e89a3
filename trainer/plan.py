"""Step 1 of a run: check the options, resolve the exact offset range, and find the features.

Nothing is trained here; the result says what will be read and which network will be built.
"""

from __future__ import annotations

from dataclasses import dataclass

from streamtrain import logs
from streamtrain.kafka_dataset import SourceRange, infer_features, infer_window, resolve_range
from streamtrain.modelcodec import read_versions
from streamtrain.modelsign import ModelTrust
from streamtrain.trainer.settings import TrainError, TrainSettings

log = logs.get("trainer")


@dataclass(frozen=True)
class TrainingPlan:
    """What one run reads and builds."""

    source_range: SourceRange
    features: list[str]
    window: int | None  # readings per sequence (windowed model), None for feature records
    layers: list[int]  # dense model's hidden widths
    filters: list[int]  # windowed model's encoder filters
    smoothing: tuple[int, int] | None

    @property
    def windowed(self) -> bool:
        return self.window is not None


def parse_smoothing(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        k, m = (int(v) for v in text.split("/"))
    except ValueError:
        raise TrainError(f"smoothing {text!r}: expected k/m, e.g. 2/3") from None
    if not 1 <= k <= m:
        raise TrainError(f"smoothing {text!r}: need 1 <= k <= m")
    return k, m


def check_options(s: TrainSettings) -> tuple[int, int] | None:
    """Refuse combinations that cannot work; the parsed smoothing."""
    smoothing = parse_smoothing(s.smoothing)
    if smoothing and s.model_kind != "windowed":
        raise TrainError("smoothing needs the windowed model (the window carries the last m readings)")
    if s.baselines == "device" and s.backend != "confluent":
        raise TrainError("per-device baselines need the confluent backend")
    if s.backend == "tfio" and s.model_kind == "windowed":
        raise TrainError("the windowed model reads sequences with the confluent backend")
    return smoothing


def source_topic(s: TrainSettings) -> str:
    return s.topic_sequences if s.model_kind == "windowed" else s.topic_features


def resolve_source_range(s: TrainSettings) -> SourceRange:
    """The exact per-partition offsets the settings' bounds ask for."""
    after = None
    if s.since_last:
        previous = read_versions(s.kafka_bootstrap, s.topic_models, trust=ModelTrust.from_settings(s))
        if previous:
            after = SourceRange.from_dict(previous[-1].metadata["source"])
    return resolve_range(
        s.kafka_bootstrap,
        source_topic(s),
        max_records=s.train_records,
        newest=s.from_end,
        after=after,
        since_ms=s.since_ms,
        until_ms=s.until_ms,
    )


def plan_training(s: TrainSettings, source_range: SourceRange | None = None) -> TrainingPlan:
    """Validate ``s``, resolve the range (unless given) and look at its first records."""
    smoothing = check_options(s)
    windowed = s.model_kind == "windowed"
    rng = source_range if source_range is not None else resolve_source_range(s)
    if rng.gone:
        log.warning(
            "training_data_gone",
            topic=rng.topic,
            offsets_gone=rng.gone,
            why="the range starts at the oldest retained record: older ones were deleted (retention?)",
        )
    if rng.records < s.min_records:
        raise TrainError(
            f"only {rng.records} records in range on {rng.topic} (need {s.min_records}); "
            "let more data arrive or lower --min-records"
        )
    features = [f.strip() for f in s.features.split(",")] if s.features else infer_features(s.kafka_bootstrap, rng)
    if not features:
        raise TrainError(f"no numeric feature fields found on {rng.topic}")
    window = infer_window(s.kafka_bootstrap, rng) if windowed else None
    if windowed and not window:
        raise TrainError(
            f"{rng.topic} holds no sequence records; give the preprocessing spec a 'sequences' "
            "section and point the trainer at its sequences topic"
        )
    if smoothing and smoothing[1] > window:
        raise TrainError(f"smoothing over {smoothing[1]} readings needs windows of at least that many ({window})")
    plan = TrainingPlan(
        rng,
        features,
        window,
        [int(w) for w in s.layers.split(",") if w.strip()],
        [int(w) for w in s.conv_filters.split(",") if w.strip()],
        smoothing,
    )
    log.info(
        "training_range",
        topic=rng.topic,
        partitions=rng.as_dict()["partitions"],
        records=rng.records,
        features=features,
        model=s.model_kind,
        baselines=s.baselines,
        window=window,
    )
    return plan
