"""Training by several workers at once: TensorFlow's ``MultiWorkerMirroredStrategy``.

Keras' ``fit()`` does not run under this strategy (see ``_train_in_step``): the epochs run as our
own step, ``strategy.run`` of a gradient step with the model's loss and optimizer.

The chief resolves the range (unless it is given) and sends it to the others (``from_chief``), so
every worker trains on the same records. Every worker learns the same normalization from the whole range (so the version is the same
model a single worker would normalize with), then trains on **its own partitions** of the
range (dealt round-robin: worker i of N reads partitions i, i+N, ...); gradients are summed
across workers each step, so all hold the same weights. The chief (worker 0) chooses the
thresholds and publishes the one version; its manifest records the workers and which
partitions each read, and ``--reproduce`` retrains it with the same assignment.

Where the cluster comes from: ``TF_CONFIG`` (TensorFlow's own variable), or
``STREAMTRAIN_WORKER_HOSTS`` plus ``JOB_COMPLETION_INDEX`` (a Kubernetes indexed Job), or
``streamtrain train --workers N`` which starts N local processes on loopback ports.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass

from streamtrain import logs
from streamtrain.kafka_dataset import KafkaSource, SourceRange, split_range
from streamtrain.ports import free_port
from streamtrain.settings import settings_env
from streamtrain.trainer.fit import FitResult, build_network, split_validation
from streamtrain.trainer.networks import progress_log
from streamtrain.trainer.normalization import Normalization
from streamtrain.trainer.plan import TrainingPlan
from streamtrain.trainer.settings import TrainError, TrainSettings
from streamtrain.trainer.statistics import epochs_for

log = logs.get("trainer")


@dataclass(frozen=True)
class Cluster:
    hosts: list[str]  # host:port of every worker, in index order
    index: int  # this worker

    @property
    def workers(self) -> int:
        return len(self.hosts)

    @property
    def chief(self) -> bool:
        return self.index == 0

    def tf_config(self) -> str:
        return json.dumps({"cluster": {"worker": self.hosts}, "task": {"type": "worker", "index": self.index}})

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Cluster | None":
        env = os.environ if env is None else env
        if env.get("TF_CONFIG"):
            cfg = json.loads(env["TF_CONFIG"])
            return cls(list(cfg["cluster"]["worker"]), int(cfg["task"]["index"]))
        if env.get("STREAMTRAIN_WORKER_HOSTS") and env.get("JOB_COMPLETION_INDEX") is not None:
            return cls(
                [h.strip() for h in env["STREAMTRAIN_WORKER_HOSTS"].split(",")], int(env["JOB_COMPLETION_INDEX"])
            )
        return None


def assignment(source_range: SourceRange, workers: int) -> list[SourceRange]:
    """Each worker's share of the range: its partitions, dealt round-robin."""
    shares = split_range(source_range, workers)
    if len(shares) < workers:
        raise TrainError(
            f"{workers} workers need at least {workers} partitions with records in the range "
            f"({len(shares)} have records on {source_range.topic})"
        )
    return shares


def start_strategy(cluster: Cluster):
    """The strategy, created before any other TensorFlow work (collectives are configured at start-up)."""
    os.environ["TF_CONFIG"] = cluster.tf_config()
    import tensorflow as tf  # noqa: PLC0415

    return tf.distribute.MultiWorkerMirroredStrategy()


def fit_distributed(
    s: TrainSettings, plan: TrainingPlan, norm: Normalization, cluster: Cluster, strategy, version: int | None
) -> tuple[FitResult, dict]:
    """Fit on this worker's partitions in step with the others; (result, the distribution for the manifest)."""
    import tensorflow as tf  # noqa: PLC0415

    shares = assignment(plan.source_range, cluster.workers)
    # Read in threads of this process: the endless dataset below is left part way through after the last
    # step, which would stop a reader process mid-send (--reader-process serves single-worker fits).
    mine = KafkaSource(s.kafka_bootstrap, shares[cluster.index], plan.features, plan.window, readers=s.readers)
    per_worker_batch = max(1, s.batch_size // cluster.workers)
    epochs = epochs_for(s, norm.training_rows)
    # Every worker must take the same number of steps: the smallest share's, estimated from its offsets.
    usable = norm.training_rows / max(1, plan.source_range.records)
    steps = max(1, math.floor(min(sh.records for sh in shares) * usable / per_worker_batch))
    every = int(round(1 / s.validation_fraction)) if s.validation_fraction else 0
    val_steps = steps // every if every else 0
    if val_steps:
        steps -= val_steps

    def fleet(x, y):
        return norm.fleet(x), norm.fleet(y)

    # Batches of the global size from this worker's own rows; the strategy splits each among the
    # replicas in sync, so a step takes ``per_worker_batch`` rows here. No auto-sharding: the
    # partitions already are this worker's share.
    if norm.baselines is not None:
        ds = mine.dataset(
            s.batch_size,
            shuffle=4096,
            seed=s.seed + cluster.index,
            transform=lambda x, devices: norm.per_device(x, devices)[0],
        )
    else:
        ds = mine.dataset(s.batch_size, shuffle=4096, seed=s.seed + cluster.index).map(fleet)
    train_ds, val_ds = split_validation(ds, s.validation_fraction if val_steps else 0)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF

    def endless(part):
        return part.repeat().with_options(options)

    reads_before = mine.reads
    t_fit = time.monotonic()
    with strategy.scope():
        model = build_network(s, plan)
        history = _train_in_step(
            strategy,
            model,
            endless(train_ds),
            endless(val_ds) if val_ds is not None else None,
            steps,
            val_steps,
            epochs,
        )
    fit_seconds = time.monotonic() - t_fit
    # The same weights in a model outside the strategy: thresholds, saving and export as for one worker.
    plain = build_network(s, plan)
    plain.set_weights(model.get_weights())
    distribution = {
        "strategy": "MultiWorkerMirroredStrategy",
        "workers": cluster.workers,
        "partitions": {str(i): sorted(sh.partitions) for i, sh in enumerate(shares)},
        "per_worker_batch": per_worker_batch,
        "steps_per_epoch": steps,
        "validation_steps": val_steps,
    }
    log.info(
        "distributed_fit_done",
        worker=cluster.index,
        workers=cluster.workers,
        seconds=round(fit_seconds, 2),
        partitions=sorted(shares[cluster.index].partitions),
        steps_per_epoch=steps,
    )
    return FitResult(plain, history, epochs, False, fit_seconds, mine.reads - reads_before), distribution


def _train_in_step(
    strategy, model, train_ds, val_ds, steps: int, val_steps: int, epochs: int
) -> dict[str, list[float]]:
    """The epochs as one ``strategy.run`` step per batch: the model's own loss and optimizer, gradients
    all-reduced across the workers by the optimizer; ``{"loss": [...], "val_loss": [...]}`` per epoch
    like Keras' ``fit()`` history (every worker's mean over the same number of steps).

    Keras 3.15's ``fit()`` cannot run under ``MultiWorkerMirroredStrategy``: it builds the model from
    one batch reduced eagerly with ``strategy.reduce("MEAN")`` ("Attempt to convert a value
    (PerReplica...) to a Tensor"), then fails reducing its logs (``mean_reduce_helper``: "Invalid
    reduction dimension 0 for input with 0 dimensions")."""
    import tensorflow as tf  # noqa: PLC0415

    optimizer = model.optimizer
    optimizer.build(model.trainable_variables)  # its slots made here, in the strategy's scope, not in a replica
    epoch_log = progress_log(epochs)

    def per_example_loss(x, y):
        error = tf.square(tf.cast(y, tf.float32) - model(x, training=True))
        return tf.reduce_mean(error, axis=list(range(1, len(error.shape))))

    def replica_train(x, y):
        with tf.GradientTape() as tape:
            loss = tf.nn.compute_average_loss(per_example_loss(x, y))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    def replica_validate(x, y):
        return tf.nn.compute_average_loss(per_example_loss(x, y))

    @tf.function
    def run_steps(replica_fn, iterator, n):
        total = tf.constant(0.0)
        for _ in tf.range(n):
            x, y = next(iterator)
            total += strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(replica_fn, args=(x, y)), axis=None)
        return total / tf.cast(n, tf.float32)

    train_it = iter(strategy.experimental_distribute_dataset(train_ds))
    val_it = iter(strategy.experimental_distribute_dataset(val_ds)) if val_ds is not None and val_steps else None
    history: dict[str, list[float]] = {"loss": []}
    if val_it is not None:
        history["val_loss"] = []
    for epoch in range(epochs):
        history["loss"].append(float(run_steps(replica_train, train_it, tf.constant(steps))))
        if val_it is not None:
            history["val_loss"].append(float(run_steps(replica_validate, val_it, tf.constant(val_steps))))
        epoch_log.on_epoch_end(epoch, {k: v[-1] for k, v in history.items()})
    return history


def _all_sum(strategy, values):
    """``values`` summed over every worker (one all-reduce of a constant made inside the replica: an
    argument tensor has no destinations under this strategy)."""
    import tensorflow as tf  # noqa: PLC0415

    @tf.function
    def reduce():
        return strategy.run(
            lambda: tf.distribute.get_replica_context().all_reduce(
                tf.distribute.ReduceOp.SUM, tf.constant(values, tf.float32)
            )
        )

    return strategy.experimental_local_results(reduce())[0].numpy()


def from_chief(strategy, cluster: Cluster, text: str) -> str:
    """The chief's ``text`` on every worker (the others' is ignored): two all-reduces, the length then
    the bytes, each worker adding zeros but the chief."""
    import numpy as np  # noqa: PLC0415

    mine = text.encode() if cluster.chief else b""
    size = int(round(float(_all_sum(strategy, np.array([len(mine)], np.float32))[0])))
    buf = np.zeros(max(size, 1), np.float32)  # byte values and lengths below 2**24 are exact in float32
    buf[: len(mine)] = np.frombuffer(mine, np.uint8)
    return bytes(np.rint(_all_sum(strategy, buf)).astype(np.uint8)[:size]).decode()


def barrier(strategy) -> None:
    """Wait until every worker gets here (one all-reduce): the others wait for the chief to publish, so no
    worker leaves the cluster while the chief still runs."""
    arrived = float(_all_sum(strategy, 1.0))
    if int(round(arrived)) != strategy.num_replicas_in_sync:
        raise TrainError(f"barrier: {arrived} of {strategy.num_replicas_in_sync} workers arrived")


#: Seconds the other workers get to end after the first one ends.
EXIT_GRACE = 60.0


def run_local_workers(
    s: TrainSettings, workers: int, args: list[str] | None = None, timeout: float | None = None
) -> tuple[int, str]:
    """Run ``streamtrain train`` as ``workers`` local processes of one cluster; (exit code, chief's stdout).

    ``s`` reaches the workers as STREAMTRAIN_ variables; SIGTERM/SIGINT are passed on to them."""
    hosts = [f"127.0.0.1:{free_port()}" for _ in range(workers)]
    procs = []
    for i in range(workers):
        env = settings_env(s)
        env["TF_CONFIG"] = Cluster(hosts, i).tf_config()
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "streamtrain.cli.main", "train", *(args or [])],
                env=env,
                stdout=subprocess.PIPE if i == 0 else subprocess.DEVNULL,
                text=True,
            )
        )
    log.info("local_workers_started", workers=workers, hosts=hosts, pids=[p.pid for p in procs])

    signalled: list[float] = []

    def pass_on(signum, _frame):
        signalled.append(time.monotonic())
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    previous = {sig: signal.signal(sig, pass_on) for sig in (signal.SIGTERM, signal.SIGINT)}
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        # A worker that fails leaves the others waiting in a collective forever, and one that ends
        # leaves the rest at most a grace period to end too: then all are stopped (SIGKILL: TensorFlow's
        # multi-worker runtime takes SIGTERM for a preemption notice).
        first_exit = None
        while any(p.poll() is None for p in procs):
            now = time.monotonic()
            if first_exit is None and any(p.returncode is not None for p in procs):
                first_exit = now
            why = (
                "a worker failed"
                if any(p.returncode not in (None, 0) for p in procs)
                else "timeout"
                if deadline and now > deadline
                else "a worker ended, the others did not"
                if first_exit and now - first_exit > EXIT_GRACE
                else "stopped by a signal"
                if signalled and now - signalled[0] > 10
                else None
            )
            if why:
                log.warning("local_workers_stopped", codes=[p.returncode for p in procs], why=why)
                for p in procs:
                    if p.poll() is None:
                        p.kill()
            time.sleep(0.2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    out = procs[0].stdout.read() if procs[0].stdout else ""
    codes = [p.wait() for p in procs]
    return next((c for c in codes if c), 0), out
