"""A stand-in for the cluster's DNS in a test's child programs: names listed in STREAMTRAIN_TEST_HOSTS
(``name=address,...``) resolve to the given address, every other name as usual. Only name resolution is
replaced: the programs connect to the name, and TLS checks the broker's certificate against that name.

Loaded by Python at start when this folder is on PYTHONPATH (tests/ingest/test_operator_mqtt_tls_e2e.py)."""

from __future__ import annotations

import os
import socket

_HOSTS = dict(p.split("=", 1) for p in os.environ.get("STREAMTRAIN_TEST_HOSTS", "").split(",") if "=" in p)

if _HOSTS:
    _getaddrinfo = socket.getaddrinfo

    def _cluster_getaddrinfo(host, *args, **kwargs):
        if isinstance(host, bytes):
            host = host.decode()
        return _getaddrinfo(_HOSTS.get(host, host), *args, **kwargs)

    socket.getaddrinfo = _cluster_getaddrinfo
