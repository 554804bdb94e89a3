"""Which model scores: the champion, an optional challenger in shadow, and how versions arrive.

A background thread tails the models topic, assembles each version, loads and warms it
fully, and only then offers it to the scoring loop, which switches references between two
batches (never mid-batch, never unloading first). A version that cannot be loaded is
refused, counted and logged; the current one keeps serving.

A version whose manifest says its training was not healthy (``training_health.status`` other than
``ok``: ``not_converged``, ``no_better_than_constant``) is loaded but held back while another version
serves: it becomes champion only on an explicit promotion request. With nothing else to serve (the
first version), it serves, flagged, since scoring nothing would leave every reading unscored.

A pin (``streamtrain models pin V``, a ``control/pin`` record) makes V champion whatever its age or health;
newer versions are then noted (event ``version_not_served``) but not served until an unpin returns to the
rule of ``streamtrain.modelcontrol.serving_version``. The watcher keeps every version of the topic
assembled so that an older one can be loaded on request.

A version that fails on live input after its load and warm-up passed is marked bad (``ModelRegistry.fail``):
the champion that served before it (kept warm for this), or else the version the rule names without the bad
ones, takes over, and the bad version is never served again by this process (a later pin or promotion naming
it is refused).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from streamtrain import logs
from streamtrain.kafka import READER_GROUP, client_config, watermarks
from streamtrain.model import LoadedModel
from streamtrain.modelcodec import KEY, ModelAssembler, ModelRejected, ModelVersion
from streamtrain.modelcontrol import (
    CONTROL_PREFIX,
    HEALTH_PROBLEMS,
    PIN_KEY,
    PROMOTE_KEY,
    BadControl,
    ModelControl,
    pin_record,
    promote_record,
    serving_version,
    unhealthy_reason,
)
from streamtrain.modelsign import ModelTrust

__all__ = [
    "CONTROL_PREFIX",
    "HEALTH_PROBLEMS",
    "ModelRegistry",
    "ModelWatcher",
    "pin_record",
    "promote_record",
    "unhealthy_reason",
]

log = logs.get("scorer.models")


@dataclass
class Offer:
    model: LoadedModel
    role: str  # "champion", "challenger", "held" (unhealthy: champion only on request), "pinned", "unpinned"
    forced: bool = False  # an unhealthy version a promotion request asked for


class ModelRegistry:
    """Thread-safe hand-over point between the model watcher and the scoring loop."""

    def __init__(self, challenger_mode: bool) -> None:
        self.challenger_mode = challenger_mode
        self._lock = threading.Lock()
        self._offers: list[Offer] = []
        self._promote: int | None = None
        self.champion: LoadedModel | None = None
        self.challenger: LoadedModel | None = None
        self.held: LoadedModel | None = None  # the newest unhealthy version, waiting for a promotion request
        self.highest_seen = 0
        self.pinned: int | None = None  # the version a pin request asked for (set when requested)
        self._unpin = False
        self._not_served: list[int] = []  # versions that arrived while pinned
        self.previous: LoadedModel | None = None  # the champion before this one, kept warm to take over
        self.bad: set[int] = set()  # versions that failed on live input: never served again

    def _crown(self, model: LoadedModel) -> int | None:
        """Make ``model`` champion; the one it replaces (unless bad) becomes the fallback. Returns the old version."""
        old = self.champion
        if old is not None and old is not model and old.version not in self.bad:
            self.previous = old
        self.champion = model
        if self.previous is model:
            self.previous = None
        return old.version if old is not None else None

    # watcher thread
    def offer(self, model: LoadedModel, forced: bool = False) -> None:
        """Hand over a loaded version; ``forced``: a promotion request named it (an unhealthy version is then
        not held)."""
        with self._lock:
            if model.version <= self.highest_seen:
                log.info("model_ignored", version=model.version, reason=f"not newer than {self.highest_seen}")
                return
            self.highest_seen = model.version
            if self.pinned is not None:
                self._not_served.append(model.version)
                return
            has_champion = self.champion is not None or any(o.role == "champion" for o in self._offers)
            if has_champion and not forced and unhealthy_reason(model.metadata) is not None:
                role = "held"
            elif self.challenger_mode and has_champion and not forced:
                role = "challenger"
            else:
                role = "champion"
            self._offers.append(Offer(model, role, forced))

    def request_promotion(self, version: int) -> None:
        with self._lock:
            self._promote = version

    def pin(self, model: LoadedModel) -> None:
        """Serve ``model`` (any age, any health) from the next batch on, and nothing newer until ``unpin``."""
        with self._lock:
            self.pinned = model.version
            self.highest_seen = max(self.highest_seen, model.version)
            self._offers.append(Offer(model, "pinned", forced=True))

    def unpin(self, model: LoadedModel | None) -> None:
        """Back to the rule: serve ``model`` (the version the rule names), or keep the champion when None."""
        with self._lock:
            self.pinned = None
            if model is None:
                self._unpin = True
                # A pin not applied yet is what this unpin undoes: the champion the watcher saw stays.
                self._offers = [o for o in self._offers if o.role != "pinned"]
            else:
                self.highest_seen = max(self.highest_seen, model.version)
                self._offers.append(Offer(model, "unpinned", forced=True))

    # scoring loop, between batches
    def apply(self) -> list[tuple[str, int | None, int]]:
        """Take pending offers and promotion requests. Returns (event, old_version, new_version) tuples:
        ``champion_switched``, ``challenger_loaded``, ``version_held`` (old: the champion that keeps
        serving), ``challenger_promoted``, ``held_promoted``, ``pinned``, ``unpinned`` and
        ``version_not_served`` (old: the pinned version, new: the version that arrived while pinned)."""
        events: list[tuple[str, int | None, int]] = []
        with self._lock:
            offers, self._offers = self._offers, []
            promote, self._promote = self._promote, None
            not_served, self._not_served = self._not_served, []
            unpin, self._unpin = self._unpin, False
            pinned = self.pinned
        for offer in offers:
            if offer.model.version in self.bad:
                log.warning(
                    "version_refused", version=offer.model.version, reason="failed after warm-up", role=offer.role
                )
                events.append(
                    ("version_refused", self.champion.version if self.champion else None, offer.model.version)
                )
            elif offer.role in ("pinned", "unpinned"):
                old = self._crown(offer.model)
                if offer.role == "pinned":
                    self.challenger = None  # a pin serves one version: no shadow beside it
                if self.held is not None and self.held.version <= offer.model.version:
                    self.held = None
                events.append((offer.role, old, offer.model.version))
            elif offer.role == "held" and self.champion is not None:
                self.held = offer.model
                events.append(("version_held", self.champion.version, offer.model.version))
            elif offer.role == "challenger" and self.champion is not None:
                old = self.challenger.version if self.challenger else None
                self.challenger = offer.model
                events.append(("challenger_loaded", old, offer.model.version))
            else:
                old = self._crown(offer.model)
                if self.held is not None and self.held.version < offer.model.version:
                    self.held = None  # a newer version serves: the held one is no longer the candidate
                events.append(("champion_switched", old, offer.model.version))
        if unpin and self.champion is not None:
            events.append(("unpinned", self.champion.version, self.champion.version))
        events += [("version_not_served", pinned, version) for version in not_served]
        if promote is not None:
            if promote in self.bad:
                log.warning("promotion_refused", version=promote, reason="failed after warm-up")
                events.append(("version_refused", self.champion.version if self.champion else None, promote))
            elif pinned is not None:
                log.warning("promotion_refused", version=promote, reason="pinned", pinned=pinned)
            elif self.challenger is not None and self.challenger.version == promote:
                events.append(self.promote())
            elif self.held is not None and self.held.version == promote:
                old = self._crown(self.held)
                self.held = None
                events.append(("held_promoted", old, promote))
            else:
                log.warning(
                    "promotion_refused",
                    version=promote,
                    reason="neither the current challenger nor a held version",
                    challenger=self.challenger.version if self.challenger else None,
                    held=self.held.version if self.held else None,
                )
        return events

    def promote(self) -> tuple[str, int | None, int]:
        assert self.challenger is not None
        challenger, self.challenger = self.challenger, None
        old = self._crown(challenger)
        return ("challenger_promoted", old, challenger.version)

    def fail(self, model: LoadedModel, fallback: LoadedModel | None = None) -> LoadedModel | None:
        """Scoring loop: ``model`` failed on live input. Its version is bad from now on; a failed challenger is
        dropped; a failed champion gives way to the previous champion, else ``fallback`` (the rule's pick without
        bad versions). Returns the champion that takes over (None: none, the bad one stays to name features)."""
        with self._lock:
            self.bad.add(model.version)
            if self.pinned == model.version:
                self.pinned = None  # the pin cannot be honoured: back to the rule
        if self.challenger is model:
            self.challenger = None
            return None
        if self.champion is not model:
            return None
        successor = self.previous if self.previous is not None and self.previous.version not in self.bad else None
        if successor is None and fallback is not None and fallback.version not in self.bad:
            successor = fallback
        self.previous = None
        if successor is not None:
            self.champion = successor
            if self.challenger is not None and self.challenger.version == successor.version:
                self.challenger = None
        return successor


class ModelWatcher(threading.Thread):
    """Tails the models topic (one partition, read from the start, no consumer group); versions ``trust``
    refuses (unsigned, wrongly signed, numbered out of range) are refused like corrupt ones."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        registry: ModelRegistry,
        on_refused,
        stop_event,
        trust: ModelTrust | None = None,
    ) -> None:
        super().__init__(name="model-watcher", daemon=True)
        self.bootstrap, self.topic, self.registry = bootstrap, topic, registry
        self.trust = trust or ModelTrust()
        self.on_refused = on_refused
        self.stop_event = stop_event
        self.caught_up = threading.Event()
        self.error: Exception | None = None
        self.control = ModelControl()  # the newest promotion and pin requests read so far
        self.available: dict[int, ModelVersion] = {}  # every version assembled and not deleted since
        self.refused: set[int] = set()  # versions that failed to load: a pin cannot name them

    def _load(self, mv: ModelVersion) -> LoadedModel | None:
        t0 = time.monotonic()
        try:
            model = LoadedModel.from_version(mv)
            serving = self.registry.champion or self.registry.challenger
            if serving is not None and model.input_kind != serving.input_kind:
                raise ModelRejected(
                    "incompatible", f"input {model.input_kind!r}, this scorer reads {serving.input_kind!r} records"
                )
            model.warm()
        except ModelRejected as exc:
            self.refused.add(mv.version)
            self._refuse(mv.metadata.get("version"), exc.reason, exc.detail)
            return None
        except Exception as exc:  # noqa: BLE001 - any failure to load means: refuse, keep serving
            self.refused.add(mv.version)
            self._refuse(mv.metadata.get("version"), "load_failed", repr(exc)[:300])
            return None
        log.info(
            "model_loaded",
            version=model.version,
            features=model.feature_names,
            threshold=model.threshold,
            load_ms=round((time.monotonic() - t0) * 1000, 1),
        )
        return model

    def _refuse(self, version, reason: str, detail: str) -> None:
        log.error("model_refused", version=version, reason=reason, detail=detail)
        self.on_refused(reason)

    def run(self) -> None:
        consumer = Consumer(
            client_config(
                self.bootstrap,
                **{
                    "group.id": f"{READER_GROUP}.model-watcher",
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "fetch.message.max.bytes": 4 * 1024 * 1024,
                },
            )
        )
        try:
            _, end = watermarks(consumer, TopicPartition(self.topic, 0))
            consumer.assign([TopicPartition(self.topic, 0, OFFSET_BEGINNING)])
            assembler = ModelAssembler(self.trust)
            backlog: list[ModelVersion] = []
            if end == 0:
                self._catch_up(backlog)
            while not self.stop_event.is_set():
                msg = consumer.poll(0.2)
                if msg is not None and not msg.error():
                    self.handle(assembler, backlog, msg.key(), msg.value(), msg.headers())
                # The position, not the last record's offset: the trainer publishes in transactions, and
                # a commit marker takes the topic's last offset without ever being returned as a record.
                if not self.caught_up.is_set() and consumer.position([TopicPartition(self.topic, 0)])[0].offset >= end:
                    self._catch_up(backlog)
        except Exception as exc:  # noqa: BLE001 - surfaced to the scoring loop, which exits non-zero
            self.error = exc
            log.exception("model_watcher_failed")
        finally:
            consumer.close()

    def handle(
        self,
        assembler: ModelAssembler,
        backlog: list[ModelVersion],
        key: bytes | None,
        value: bytes | None,
        headers=None,
    ) -> None:
        """One record of the models topic: a control request, part of a version, or refused."""
        if (key or b"").startswith(CONTROL_PREFIX):
            self._control(key, value)
            return
        try:
            mv = assembler.add(key, value, headers)
        except ModelRejected as exc:
            self._refuse(None, exc.reason, exc.detail)
            return
        except Exception as exc:  # noqa: BLE001 - one bad record must not stop the watcher (and the scorer)
            self._refuse(None, "bad_record", repr(exc)[:300])
            return
        if mv is None:
            if value is None and key is not None and key.endswith(b"/manifest"):
                # A deleted version (the trainer keeps the newest few): not worth holding until catch-up.
                backlog[:] = [b for b in backlog if f"model/{b.version}/manifest".encode() != key]
                deleted = KEY.match(key)
                if deleted:
                    self.available.pop(int(deleted.group(1)), None)
            return
        self.available[mv.version] = mv
        if self.caught_up.is_set():
            model = self._load(mv)
            if model is not None:
                self.registry.offer(model)
        else:
            backlog.append(mv)

    def _catch_up(self, backlog: list[ModelVersion]) -> None:
        """At start only the newest loadable version matters; older ones fall back in order. When the newest
        is unhealthy, the newest healthy one before it serves and the unhealthy one is held, as if they had
        arrived while running, unless the topic's promotion request names it (a promotion outlives restarts)."""
        pinned = self._pinned_model() if self.control.pinned is not None else None
        if pinned is not None:
            self.registry.pin(pinned)  # the pin outlives the restart; nothing else needs loading
            backlog.clear()
        newest: LoadedModel | None = None
        for mv in sorted(backlog, key=lambda m: m.metadata.get("version", 0), reverse=True):
            model = self._load(mv)
            if model is None:
                continue
            requested = self.control.promoted == model.version
            if newest is None and unhealthy_reason(model.metadata) is not None and not requested:
                newest = model  # offered after a healthy predecessor, if there is one
                continue
            self.registry.offer(model, forced=requested)
            break
        if newest is not None:
            self.registry.offer(newest)
        backlog.clear()
        self.caught_up.set()
        log.info("models_caught_up", champion=self.registry.highest_seen or None)

    def _control(self, key: bytes, value: bytes | None) -> None:
        """A promotion or pin request; before catch-up only the newest of each counts (read at catch-up)."""
        try:
            self.control = self.control.read(key, value)
        except BadControl as exc:
            self._refuse(None, "bad_control", str(exc))
            return
        if not self.caught_up.is_set():
            return
        if key == PROMOTE_KEY:
            log.info("promotion_requested", version=self.control.promoted)
            self.registry.request_promotion(self.control.promoted or 0)
        elif key == PIN_KEY and self.control.pinned is not None:
            log.info("pin_requested", version=self.control.pinned)
            model = self._pinned_model()
            if model is not None:
                self.registry.pin(model)
        elif key == PIN_KEY:
            log.info("unpin_requested")
            self._unpin()

    def _pinned_model(self) -> LoadedModel | None:
        """The pinned version loaded and warmed; None (refused, logged, counted) when it is not on the topic or
        cannot be served: the scorer keeps serving what it served."""
        version = self.control.pinned
        mv = self.available.get(version) if version is not None else None
        if version in self.registry.bad:
            self._refuse(version, "pin_refused", f"version {version} failed on live input after warm-up")
            return None
        if mv is None or version in self.refused:
            have = ", ".join(str(v) for v in sorted(set(self.available) - self.refused)) or "none"
            why = "refused when it arrived" if version in self.refused else "not on the topic"
            self._refuse(version, "pin_refused", f"version {version} is {why} (versions: {have})")
            return None
        model = self._load(mv)
        if model is None:
            self._refuse(version, "pin_refused", f"version {version} cannot be loaded")
        return model

    def healthy(self) -> dict[int, bool]:
        """``{version: healthy}`` of the versions this watcher could serve (the rule's input)."""
        bad = self.refused | self.registry.bad
        return {v: unhealthy_reason(mv.metadata) is None for v, mv in list(self.available.items()) if v not in bad}

    def fallback_model(self) -> LoadedModel | None:
        """Scoring loop, after a version failed with no previous champion to take over: the version the rule
        names among the good ones, loaded and warmed (None: nothing left to serve)."""
        target = serving_version(self.healthy(), replace(self.control, pinned=None))
        mv = self.available.get(target) if target is not None else None
        return self._load(mv) if mv is not None else None

    def _unpin(self) -> None:
        """Back to the rule: load the version it names unless it already serves."""
        target = serving_version(self.healthy(), self.control)
        champion = self.registry.champion
        if target is None or (champion is not None and champion.version == target):
            self.registry.unpin(None)
            return
        model = self._load(self.available[target])
        self.registry.unpin(model)  # None when it failed to load (refused, counted): the champion stays
