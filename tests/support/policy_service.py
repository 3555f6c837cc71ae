"""The policy tests' mTLS material and helpers: a CA with a server and the trader's client
certificate (`pki`, a module-scoped fixture), a stub that calls as the trader, and the audit
records of one request."""

import json

import pytest

from signer.client import TlsFiles, open_channel
from signer.v1 import signer_pb2_grpc as pb_grpc
from tests.support.tls_certs import CertificateAuthority

TRADER_ID = "spiffe://prod/agents/trader"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority(directory)
    return ca, ca.server(), ca.issue("trader", uris=(TRADER_ID,))


def trader_stub(pki, port: int) -> pb_grpc.SignerServiceStub:
    ca, _, trader = pki
    channel = open_channel(f"127.0.0.1:{port}", TlsFiles(ca.cert_pem, trader.cert_pem,
                                                        trader.key_pem))
    return pb_grpc.SignerServiceStub(channel)


def records_for(store, kind: str, request_id: str) -> list[dict]:
    found = []
    for writer in store.writers():
        for row in store.audit_rows(writer):
            body = json.loads(row.body)
            if body["kind"] == kind and body.get("request_id") == request_id:
                found.append(body)
    return found
