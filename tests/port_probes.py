"""Probes of a TCP port as a stranger would make them (no key, no password, no client certificate): does it
answer? Used by tests/test_local_stack.py on every port the local stack listens on.

A port answers when any of these gets through:
- HTTP/1.1 GET of a few routes that read or hand out data (S3, filer, master, MLflow), over plain TCP and over
  TLS without a client certificate: a status below 400;
- the HTTP/2 connection preface in clear text (what an unprotected gRPC server speaks): a SETTINGS frame back.
A TLS port that demands a client certificate, a gRPC port with mutual TLS, or an HTTP port that wants a token
answers none of these.
"""

from __future__ import annotations

import socket
import ssl

ROUTES = (
    "/",
    "/abstractinator/",
    "/buckets/abstractinator/",
    "/dir/assign",
    "/dir/status",
    "/api/2.0/mlflow/experiments/search?max_results=1",
    "/metrics",
)
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  # + an empty SETTINGS frame


def _exchange(port: int, request: bytes, tls: bool) -> bytes:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as raw:
            if tls:
                context = ssl.create_default_context()
                context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
                stream = context.wrap_socket(raw)
            else:
                stream = raw
            stream.sendall(request)
            return stream.recv(4096)
    except (OSError, ssl.SSLError):  # refused, reset, handshake or certificate failure: no answer
        return b""


def _http_status(answer: bytes) -> int | None:
    parts = answer.split(b" ", 2)
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
        return int(parts[1])
    return None


def answers_without_credentials(port: int) -> str | None:
    """How a stranger got an answer from `port`, or None when every probe was refused."""
    for tls in (False, True):
        for route in ROUTES:
            request = f"GET {route} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
            status = _http_status(_exchange(port, request, tls))
            if status is not None and status < 400:
                return f"GET {route} over {'TLS' if tls else 'plain TCP'}: {status}"
    answer = _exchange(port, _PREFACE, tls=False)
    if len(answer) >= 9 and answer[3] == 4:  # a SETTINGS frame: a clear-text HTTP/2 (gRPC) server
        return "clear-text HTTP/2 (gRPC without TLS)"
    return None
