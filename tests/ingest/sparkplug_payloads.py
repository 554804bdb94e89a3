"""Sparkplug B payloads of one edge node and its motor, encoded by pysparkplug (an independent Sparkplug
library): shared by the unit tests (test_sparkplug.py) and the vector builder (vectors/build_sparkplug_vectors.py)."""

from __future__ import annotations

import pysparkplug as psp

DT = psp.DataType
T0 = 1_765_015_200_000  # ms: the devices' clock


def metric(name, datatype, value, alias=None, timestamp=T0, **kw) -> psp.Metric:
    return psp.Metric(timestamp=timestamp, name=name, datatype=datatype, value=value, alias=alias, **kw)


def by_alias(alias: int, datatype, value, timestamp=T0 + 1000) -> psp.Metric:
    return psp.Metric(timestamp=timestamp, name=None, datatype=datatype, value=value, alias=alias)


def nbirth(seq=0, bd_seq=7, more=()) -> bytes:
    return psp.NBirth(
        timestamp=T0,
        seq=seq,
        metrics=[
            metric("bdSeq", DT.INT64, bd_seq),
            metric("Node Control/Rebirth", DT.BOOLEAN, False),
            metric("Supply/Voltage", DT.FLOAT, 24.0, alias=1),
            *more,
        ],
    ).encode()


def dbirth(seq=1) -> bytes:
    return psp.DBirth(
        timestamp=T0,
        seq=seq,
        metrics=[
            metric("Motor/Speed RPM", DT.DOUBLE, 0.0, alias=10),
            metric("Motor/Temperature", DT.FLOAT, 20.0, alias=11),
            metric("Inputs/Count", DT.INT32, 0, alias=12),
            metric("Running", DT.BOOLEAN, False, alias=13),
            metric("Properties/Serial", DT.STRING, "A-17", alias=14),
        ],
    ).encode()
