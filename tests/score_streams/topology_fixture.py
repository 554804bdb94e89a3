"""The fixture of the Kafka Streams scorer's topology tests (scorer/streams/src/test): two versions of
a small trained autoencoder exactly as the models topic carries them (the records
streamtrain.modelcodec.encode makes: Keras artefact, metadata, the trainer's ONNX scoring graph),
feature rows, and what the Python scorer (streamtrain.model.LoadedModel) scores and flags for
them under each version. The Java tests must reproduce those numbers.

    python -m tests.score_streams.topology_fixture   # rewrites scorer/streams/src/test/resources/models.json
"""

from __future__ import annotations

import base64
import json

import numpy as np

from streamtrain.scorer.streams_engine import MODULE

FIXTURE = MODULE / "src" / "test" / "resources" / "models.json"
FEATURES = ["temperature", "current", "vibration", "pressure"]
CENTRE, SPREAD = np.array([60.0, 1.5, 0.3, 3.0]), np.array([5.0, 0.3, 0.05, 0.3])


def _version(version: int, seed: int):
    from streamtrain.model import ARTEFACT_FORMAT, LoadedModel, reconstruction_error, save_artefact
    from streamtrain.modelcodec import encode
    from streamtrain.onnx_export import ONNX_ATTACHMENT, export_scoring_graph
    from streamtrain.trainer.train import build_autoencoder

    rng = np.random.default_rng(seed)
    load = rng.uniform(0.2, 0.8, (1024, 1))  # one latent load drives every channel, as in the simulator
    x = (CENTRE + SPREAD * (4 * load - 2) + rng.normal(0, 0.1, (1024, 4)) * SPREAD).astype(np.float32)
    mean, std = x.mean(0), x.std(0)
    xn = (x - mean) / std
    km = build_autoencoder(len(FEATURES), [8, 2, 8], 1e-2, seed=seed)
    km.fit(xn, xn, epochs=40, batch_size=128, verbose=0)
    errors = reconstruction_error(xn, km(xn, training=False).numpy())
    meta = {
        "version": version,
        "feature_names": FEATURES,
        "format": ARTEFACT_FORMAT,
        "threshold": float(np.quantile(errors, 0.99) * 1.5),
        "normalization": {"mean": mean.tolist(), "std": std.tolist()},
    }
    graph = export_scoring_graph(km, mean, std, check_rows=x[:32])
    records = encode(save_artefact(km), meta, {ONNX_ATTACHMENT: graph})
    return LoadedModel(km, meta), records


def rows() -> np.ndarray:
    """Normal readings, then readings that break the channels' relation (anomalies for both versions)."""
    rng = np.random.default_rng(7)
    load = rng.uniform(0.2, 0.8, (6, 1))
    normal = CENTRE + SPREAD * (4 * load - 2)
    broken = normal[:4] + np.array([[3, -3, 0, 0], [0, 0, 4, -4], [-5, 0, 5, 0], [0, 6, 0, 6]]) * SPREAD
    return np.vstack([normal, broken]).round(4).astype(np.float32)


def make() -> dict:
    x = rows()
    devices = [f"dev-{i:05d}" for i in range(len(x))]
    out = {"features": FEATURES, "rows": x.astype(float).tolist(), "devices": devices, "versions": {}}
    for version, seed in ((1, 101), (2, 202)):
        model, records = _version(version, seed)
        judged = model.assess(x, devices)
        out["versions"][str(version)] = {
            "records": [[k.decode(), base64.b64encode(v).decode()] for k, v in records],
            "threshold": model.threshold,
            "scores": judged.scores.astype(float).tolist(),
            "flags": judged.flags.astype(bool).tolist(),
        }
    return out


if __name__ == "__main__":
    data = make()
    for v, d in data["versions"].items():
        print(f"v{v}: threshold {d['threshold']:.4f}, flags {d['flags']}")
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text(json.dumps(data, indent=1) + "\n")
    print(f"{FIXTURE}: {FIXTURE.stat().st_size} bytes")
