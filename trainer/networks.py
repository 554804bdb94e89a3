"""The networks a version can hold (dense and causal-conv autoencoders) and the epoch log callback."""

from __future__ import annotations

from streamtrain import logs

log = logs.get("trainer")


def build_autoencoder(n_features: int, layers: list[int], learning_rate: float, seed: int):
    import keras  # noqa: PLC0415

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((n_features,), name="features")
    x = inputs
    for i, width in enumerate(layers):
        x = keras.layers.Dense(width, activation="tanh" if i != len(layers) // 2 else "linear", name=f"dense_{i}")(x)
    outputs = keras.layers.Dense(n_features, name="reconstruction")(x)
    model = keras.Model(inputs, outputs, name="autoencoder")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse")
    return model


def build_conv_autoencoder(
    window: int, n_features: int, filters: list[int], kernel_size: int, learning_rate: float, seed: int
):
    """Causal 1-D conv autoencoder: each reading is rebuilt from itself and the readings before it,
    through a narrow bottleneck, so its error at the newest step scores the newest reading."""
    import keras  # noqa: PLC0415

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((window, n_features), name="window")
    x = inputs
    for i, f in enumerate(filters):
        last = i == len(filters) - 1
        x = keras.layers.Conv1D(
            f, kernel_size, padding="causal", activation=None if last else "tanh", name=f"encode_{i}"
        )(x)
    for i, f in enumerate(reversed(filters[:-1])):
        x = keras.layers.Conv1D(f, kernel_size, padding="causal", activation="tanh", name=f"decode_{i}")(x)
    outputs = keras.layers.Conv1D(n_features, 1, name="reconstruction")(x)
    model = keras.Model(inputs, outputs, name="conv_autoencoder")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse")
    return model


def progress_log(epochs: int):
    """Keras callback that writes one structured line per epoch."""
    import keras  # noqa: PLC0415

    class Progress(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs_=None):
            log.info(
                "epoch_done", epoch=epoch + 1, of=epochs, **{k: round(float(v), 6) for k, v in (logs_ or {}).items()}
            )

    return Progress()
