"""The loopback network the benchmarks talk over: a free port, a JSON request."""

from __future__ import annotations

import json
import socket
import urllib.request


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url: str, payload: dict | None = None) -> dict:
    """GET ``url`` (or POST ``payload`` as JSON) and return the JSON answer."""
    data = json.dumps(payload).encode() if payload is not None else None
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as response:
        return json.load(response)
