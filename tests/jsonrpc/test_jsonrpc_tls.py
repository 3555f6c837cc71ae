"""The JSON-RPC door over TLS with the gRPC server's material: client certificates decide who
may call (HTTP 401 without one, 403 for one that names no client, the handshake fails for
another CA), per-client keys and methods apply, and a reload serves the new certificate."""

import http.client
import json
import ssl
from typing import Any

import pytest

from signer.config import ClientConfig, ServerConfig
from signer.errors import ConfigError
from signer.jsonrpc.config import JsonRpcConfig
from signer.jsonrpc.server import JsonRpcListener
from signer.policy import PolicyConfig
from signer.service import KeyRing
from signer.tls import ReloadableTls
from tests.conftest import env_wallet, open_app
from tests.jsonrpc.conftest import Anvil, result
from tests.support.tls_certs import CertificateAuthority

HOT, COLD = "0x" + "11" * 32, "0x" + "22" * 32
FRIEND = "0x" + "f1" * 20
POLICIES = {"payer": PolicyConfig.model_validate({
    "chains": [31337], "max_gas_fee_wei": "10000000000000000",
    "allow": [{"id": "small-to-friend", "to": FRIEND, "value_max": "1000"}],
})}
CLIENTS = {
    "trader": ClientConfig(identity="spiffe://test/trader", keys=["hot"]),
    "payer": ClientConfig(identity="spiffe://test/payer", keys=["hot"], policy="payer"),
    "reader": ClientConfig(identity="reader.internal", keys=["*"],
                           methods=["ListKeys", "GetAddress"]),
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority(directory)
    return {
        "ca": ca,
        "server": ca.server(),
        "trader": ca.issue("trader", uris=("spiffe://test/trader",)),
        "reader": ca.issue("reader", dns=("reader.internal",)),
        "stranger": ca.issue("stranger", uris=("spiffe://test/stranger",)),
        "payer": ca.issue("payer", uris=("spiffe://test/payer",)),
        "foreign": CertificateAuthority(directory, "other CA").issue(
            "foreign", uris=("spiffe://test/trader",)),
    }


@pytest.fixture
def door(pki: dict[str, Any], anvil: Anvil, tmp_path):
    config = ServerConfig(listen="127.0.0.1:0", tls_cert_file=pki["server"].cert_file,
                          tls_key_file=pki["server"].key_file, client_ca_file=pki["ca"].cert_file)
    tls = ReloadableTls(config)
    keyring = KeyRing([env_wallet(HOT, "hot"), env_wallet(COLD, "cold")])
    app = open_app(keyring, tmp_path, clients=CLIENTS, policies=POLICIES)
    listener = JsonRpcListener(app, JsonRpcConfig(listen="127.0.0.1:0", upstream=anvil.url),
                               server_config=config, tls=tls)
    listener.start()
    yield listener, tls, keyring
    listener.stop(0)


def call(listener: JsonRpcListener, pki: dict[str, Any], who: str | None, method: str,
         params: list[Any] | None = None) -> tuple[int, Any]:
    context = ssl.create_default_context(cafile=str(pki["ca"].cert_file))
    if who:
        context.load_cert_chain(pki[who].cert_file, pki[who].key_file)
    connection = http.client.HTTPSConnection("127.0.0.1", listener.port, context=context,
                                             timeout=10)
    try:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []})
        connection.request("POST", "/", body)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_callers_are_identified_by_their_client_certificate(door, pki):
    listener, _, keyring = door
    hot = keyring.get("hot").address
    status, reply = call(listener, pki, None, "eth_accounts")
    assert status == 401 and "client certificate is required" in reply["error"]["message"]
    for method in ("eth_accounts", "eth_blockNumber"):  # the proxy is not open to strangers
        status, reply = call(listener, pki, "stranger", method)
        assert status == 403 and "matches no configured client" in reply["error"]["message"]
    with pytest.raises(ssl.SSLError):
        call(listener, pki, "foreign", "eth_accounts")
    assert call(listener, pki, "trader", "eth_accounts") == (
        200, {"jsonrpc": "2.0", "id": 1, "result": [hot]})
    assert call(listener, pki, "trader", "eth_blockNumber")[1]["result"].startswith("0x")


def test_per_client_keys_and_methods_apply(door, pki):
    listener, _, keyring = door
    hot, cold = keyring.get("hot").address, keyring.get("cold").address
    tx = {"to": "0x" + "42" * 20, "value": "0x1", "nonce": "0x0", "gas": "0x5208",
          "chainId": "0x7a69", "gasPrice": "0x1"}
    status, reply = call(listener, pki, "trader", "eth_signTransaction", [{**tx, "from": hot}])
    assert status == 200 and reply["result"].startswith("0x")
    _, reply = call(listener, pki, "trader", "eth_signTransaction", [{**tx, "from": cold}])
    assert reply["error"] == {
        "code": -32000, "message": f"no key for {cold} is available to this client"}
    assert call(listener, pki, "reader", "eth_accounts")[1]["result"] == [hot, cold]
    _, reply = call(listener, pki, "reader", "personal_sign", ["0x00", hot])
    assert reply["error"]["code"] == -32000
    assert "may not call SignMessage" in reply["error"]["message"]


def test_a_policy_denial_is_transaction_rejected_and_never_reaches_the_node(door, pki,
                                                                           anvil: Anvil):
    listener, _, keyring = door
    hot = keyring.get("hot").address
    anvil.fund(hot)
    before = result(anvil.url, "eth_getTransactionCount", [hot, "pending"])
    _, reply = call(listener, pki, "payer", "eth_sendTransaction",
                    [{"from": hot, "to": FRIEND, "value": hex(5000)}])
    assert reply["error"]["code"] == -32003, reply
    assert "policy payer" in reply["error"]["message"]
    assert "small-to-friend" in reply["error"]["message"]
    assert anvil.pending_pool_empty()
    # the nonce the denied request reserved was given back: the next allowed send uses it
    _, reply = call(listener, pki, "payer", "eth_sendTransaction",
                    [{"from": hot, "to": FRIEND, "value": hex(500)}])
    tx_hash = reply["result"]
    assert anvil.receipt(tx_hash)["status"] == "0x1"
    assert result(anvil.url, "eth_getTransactionByHash", [tx_hash])["nonce"] == before


def test_reload_serves_the_new_certificate_to_new_connections(door, pki):
    listener, tls, _ = door
    before = _served_certificate(listener, pki)
    renewed = pki["ca"].server("server")  # same files, new certificate and key
    assert renewed.cert_pem != pki["server"].cert_pem
    assert tls.reload()
    after = _served_certificate(listener, pki)
    assert after != before and after == ssl.PEM_cert_to_DER_cert(renewed.cert_pem.decode())
    assert call(listener, pki, "trader", "health_status")[1]["result"] == "OK"


def _served_certificate(listener: JsonRpcListener, pki: dict[str, Any]) -> bytes:
    context = ssl.create_default_context(cafile=str(pki["ca"].cert_file))
    context.load_cert_chain(pki["trader"].cert_file, pki["trader"].key_file)
    connection = http.client.HTTPSConnection("127.0.0.1", listener.port, context=context,
                                             timeout=10)
    try:
        connection.connect()
        der = connection.sock.getpeercert(binary_form=True)
        assert der is not None
        return der
    finally:
        connection.close()


def test_non_loopback_without_tls_is_refused(tmp_path):
    app = open_app(KeyRing([env_wallet(HOT, "hot")]), tmp_path)
    with pytest.raises(ConfigError, match=r"jsonrpc.listen 0.0.0.0:0 is not a loopback"):
        JsonRpcListener(app, JsonRpcConfig(listen="0.0.0.0:0"))
