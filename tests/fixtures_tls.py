"""TLS fixtures: a fresh CA, server and client certificates per test (see tests/tls_certs.py)."""

from pathlib import Path

import pytest

from tests.tls_certs import TlsCerts, make_tls_certs


@pytest.fixture
def tls_certs(tmp_path: Path) -> TlsCerts:
    """The full certificate set as PEM files in tmp_path/"tls" (a few ms: EC P-256)."""
    return make_tls_certs(tmp_path / "tls")
