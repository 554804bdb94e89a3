from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from streamtrain.mqtt import MqttTls
from streamtrain.settings import CommonSettings


class SimulatorSettings(CommonSettings):
    """Settings of `streamtrain simulate` (env prefix STREAMTRAIN_)."""

    devices: int = Field(100, ge=1, description="Number of simulated devices")
    rate: float = Field(1.0, ge=0, description="Readings per second per device (0 = as fast as possible)")
    count: int | None = Field(None, ge=1, description="Readings per device, then stop (default: run until stopped)")
    duration_s: float | None = Field(None, gt=0, description="Stop after this many seconds")
    anomaly_rate: float = Field(0.004, ge=0, lt=1, description="Probability per reading that an anomaly episode starts")
    seed: int = Field(42, description="Seed that makes a run reproducible")
    connections: int = Field(4, ge=1, description="MQTT connections the fleet's devices share")
    max_inflight: int = Field(500, ge=1, description="Unacknowledged QoS 1 messages per connection")
    credentials_file: Path | None = Field(
        None,
        description=(
            "device_id:password lines (mode 0600, e.g. from `streamtrain stack passwd-fleet`): each device then "
            "connects on its own MQTT connection as itself, the fleet's device ids are the file's (--devices takes "
            "the first N) and --connections is ignored; a CSV replay needs a line for each of its devices"
        ),
    )
    seq_state_file: Path = Field(
        Path(".streamtrain/replay-seqs.json"),
        description=(
            "CSV replay without a seq column: the newest seq published per broker and device; the next replay of a "
            "device continues after it, so a second replay never reuses a (device, seq) the pipeline has seen"
        ),
    )

    @model_validator(mode="after")
    def _tls_valid(self) -> "SimulatorSettings":
        MqttTls.from_env()  # a CA file that is not there: an invalid setting, said at start
        return self
