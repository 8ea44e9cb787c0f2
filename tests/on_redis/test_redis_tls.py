"""rediss:// URLs: the same store over TLS (a self-signed certificate made
with openssl, which scripts/test-deps.sh installs when missing)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import logshelf
from _redis_server import RedisServer, free_port


@pytest.fixture
def tls_url(tmp_path: Path) -> Iterator[str]:
    openssl = shutil.which("openssl")
    assert openssl, "openssl is missing: run scripts/test-deps.sh"
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    server = RedisServer(
        tmp_path / "redis",
        "--tls-port", str(port),
        "--tls-cert-file", str(cert),
        "--tls-key-file", str(key),
        "--tls-ca-cert-file", str(cert),
        "--tls-auth-clients", "no",
    ).start()  # fmt: skip
    try:
        yield f"rediss://127.0.0.1:{port}/0?namespace=tls&ssl_ca_certs={cert}"
    finally:
        server.stop()


def test_a_store_and_a_cache_over_tls(tls_url: str) -> None:
    with logshelf.open(tls_url, "n", compression="lz4") as db:
        db.update({"a": 1, "big": b"x" * 3_000_000})
        with db.transaction():
            db["a"] += 1
        assert db["a"] == 2 and len(db["big"]) == 3_000_000 and len(db) == 2
    with logshelf.Cache(tls_url.replace("namespace=tls", "namespace=tlscache")) as cache:
        cache.set("k", "v", ttl=60)
        assert cache["k"] == "v"


def test_tls_with_an_unknown_certificate_fails_clearly(tls_url: str) -> None:
    url = tls_url.split("&ssl_ca_certs=")[0]  # the system's CAs do not know it
    with pytest.raises(logshelf.BackendUnavailableError, match="unavailable"):
        logshelf.open(url)
