"""Poisoning the models topic (issue 24, findings 4 and 5) on real Kafka, with the real trainer and both
scorers (Python and Kafka Streams) given the trainer's public key: an unsigned version, one signed by a key
not listed, one whose signature does not match, and one claiming version 999,999,999 are refused by both,
logged and counted, while the signed previous version keeps scoring; the trainer's next version is still
numbered after the newest accepted one and served by both. The trainer fails loudly when readers would not
accept what it published."""

from __future__ import annotations

import json
import urllib.request

import pytest
from confluent_kafka import Producer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from streamtrain.kafka import ensure_topics, producer_config
from streamtrain.modelcodec import publish_model, read_versions
from streamtrain.modelsign import ModelSigner, ModelTrust, parse_public_keys, public_key_text
from streamtrain.stack.local import free_port
from streamtrain.topics import TopicSpec
from tests.programs import Program, settings_env
from tests.score.test_scorer_e2e import FeatureStream, train, train_process, wait_scores
from tests.score_streams.test_streams_scorer_e2e import programs, start_streams_scorer  # noqa: F401 (fixture)

REFUSALS = ("unsigned", "unknown_key", "bad_signature", "version_out_of_range")


def signing_key(tmp_path, name: str = "model-signing.pem") -> tuple[str, str]:
    """A PEM private key file as `openssl genpkey -algorithm ed25519` writes it, and its public key text."""
    private = Ed25519PrivateKey.generate()
    path = tmp_path / name
    path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return str(path), public_key_text(private.public_key())


def metrics(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()


@pytest.mark.e2e
def test_both_scorers_refuse_unsigned_forged_and_huge_versions_and_serve_the_trainers_next(
    pipeline,
    tmp_path,
    programs,  # noqa: F811 (fixture)
):
    key_file, public = signing_key(tmp_path)
    trust = {"model_verify_keys": public}
    stream = FeatureStream(pipeline, seed=17)
    stream.send(100)
    train(pipeline, tmp_path, "train-v1", records=2000, model_signing_key_file=key_file, **trust)

    java_side = pipeline.model_copy(update={"topic_scores": f"{pipeline.topic_scores}.java"})
    ensure_topics(pipeline.kafka_bootstrap, [TopicSpec(java_side.topic_scores, partitions=3)])
    py_port, jv_port = free_port(), free_port()
    python = Program(
        ["score"],
        settings_env(pipeline, group_id=f"py-{pipeline.topic_scores}", batch_size=200, metrics_port=py_port, **trust),
        tmp_path / "python-scorer.log",
    ).start()
    programs.append(python)
    java = start_streams_scorer(java_side, tmp_path, programs, metrics_port=jv_port, **trust)
    python.wait_log('"new_version": 1', timeout=120)
    java.wait_log('"new_version": 1', timeout=180)
    assert '"signed_models_only": true' in python.log() and '"signed_models_only": true' in java.log()

    [good] = read_versions(pipeline.kafka_bootstrap, pipeline.topic_models, trust=ModelTrust(parse_public_keys(public)))
    producer = Producer(producer_config(pipeline.kafka_bootstrap))
    trainer_key = ModelSigner.from_file(key_file)
    forged = ModelSigner(Ed25519PrivateKey.generate())
    forged.key_id = trainer_key.key_id  # names the trainer's key; the signature is another key's
    attack = [
        (2, None),  # unsigned
        (3, ModelSigner(Ed25519PrivateKey.generate())),  # signed by a key nobody listed
        (4, forged),
        (999_999_999, None),  # the number that used to pin every scorer and the trainer's numbering
    ]
    # Each carries v1's real artefact and ONNX graph (checksums hold): only the signature can tell.
    for version, signer in attack:
        publish_model(
            producer,
            pipeline.topic_models,
            good.artefact,
            {**good.metadata, "version": version, "parent_version": 1},
            attachments=good.attachments,
            signer=signer,
        )
    for prog in (python, java):
        for reason in REFUSALS:
            prog.wait_log(f'"reason": "{reason}"', timeout=90)

    # The signed previous version keeps scoring on both.
    sent = len(stream.sent)
    stream.send(20)
    after_attack = set(stream.sent[sent:])
    for side in (pipeline, java_side):
        scores = wait_scores(side, after_attack)
        assert {s["model_version"] for s in scores if (s["device_id"], s["seq"]) in after_attack} == {1}

    # The trainer's next version: numbered after the newest accepted one (1), published, served by both.
    nxt = train_process(
        pipeline, tmp_path, "train-v2", records=2000, from_end=True, model_signing_key_file=key_file, **trust
    )
    [published] = [json.loads(line) for line in nxt.log().splitlines() if '"model_published"' in line]
    assert published["version"] == 2 and published["signed_by"] == trainer_key.key_id
    stream.start(per_second=200)  # versions switch between batches: records must flow
    python.wait_log('"new_version": 2', timeout=120)
    java.wait_log('"new_version": 2', timeout=120)
    stream.stop()
    sent = len(stream.sent)
    stream.send(20)
    after_v2 = set(stream.sent[sent:])
    for side in (pipeline, java_side):
        scores = wait_scores(side, after_v2)
        assert {s["model_version"] for s in scores if (s["device_id"], s["seq"]) in after_v2} == {2}

    for port in (py_port, jv_port):
        text = metrics(port)
        for reason in REFUSALS:
            assert f'streamtrain_scorer_models_refused_total{{reason="{reason}"}} 1.0' in text, (port, text)
        assert "streamtrain_scorer_model_version 2.0" in text
    assert python.stop() == 0, python.log()[-3000:]
    assert java.stop() == 0, java.log()[-3000:]
    for prog in (python, java):  # the private key's bytes never reach a log
        assert open(key_file).read().splitlines()[1] not in prog.log()


@pytest.mark.e2e
def test_trainer_fails_loudly_when_readers_would_not_accept_its_version(pipeline, tmp_path):
    FeatureStream(pipeline, seed=19).send(60)
    key_file, _ = signing_key(tmp_path)
    _, someone_else = signing_key(tmp_path, "other.pem")
    env = settings_env(
        pipeline, train_records=1000, epochs=2, model_signing_key_file=key_file, model_verify_keys=someone_else
    )
    prog = Program(["train"], env, tmp_path / "train.log").start()
    assert prog.proc.wait(300) != 0, "a version readers refuse must not end as a success"
    assert '"model_publish_unverified"' in prog.log()
    assert '"model_published"' not in prog.log()
