"""The ConfigMap's config.toml serves as `wallet-signer serve` runs it in a pod, with real parts
in place of the cluster's: PostgreSQL (the test cluster), KMS (the moto emulator, with the
config's own alias), a PKCS#11 token (SoftHSM, with the config's own token and key labels),
certificates made here for the config's own client identities. Only what the cluster provides
differently is swapped: addresses, the KMS endpoint, the HSM library, file paths. Then the
Deployment's probes are asked on the health-only listener, the clients sign over mTLS under
the config's policy, and SIGHUP reloads an edited policy as docs/deploy/kubernetes.md says."""

import re
import signal
import time
import tomllib
import urllib.request
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from signer.client import RemoteAccount, TlsFiles, open_channel
from signer.config import SOFTHSM_MODULE
from signer.v1 import signer_pb2 as pb
from signer.v1 import signer_pb2_grpc as pb_grpc
from tests.support.fixtures_pkcs11 import SoftHsmToken, generate_key, require_softhsm
from tests.support.serve_process import start_serve
from tests.support.tls_certs import CertificateAuthority

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
SERVING = health_pb2.HealthCheckResponse.SERVING
TREASURY = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"  # in the config's set @treasury


def manifest(name: str) -> dict:
    (doc,) = yaml.safe_load_all((DEPLOY / name).read_text(encoding="utf-8"))
    return doc


def swap(text: str, old: str, new: str) -> str:
    """Replace a line's exact text once: a ConfigMap edit that moves it fails here."""
    assert text.count(old) == 1, f"config.toml no longer contains {old!r} exactly once"
    return text.replace(old, new)


def logged_port(log: str, pattern: str) -> int:
    match = re.search(pattern, log)
    assert match, f"{pattern!r} not in the log:\n{log}"
    return int(match.group(1))


@pytest.fixture
def hsm_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SoftHsmToken:
    """A SoftHSM token labelled as in the config ("wallet-signer"), with its "treasury" key."""
    require_softhsm()
    state = tmp_path / "softhsm"
    token = SoftHsmToken(state, "wallet-signer", state / "softhsm2.conf", state / "user-pin",
                         state / "so-pin")
    token.setup()
    monkeypatch.setenv("SOFTHSM2_CONF", str(token.conf))
    generate_key(token, "treasury")
    return token


def test_the_configmap_config_serves_probes_signs_and_reloads(
        tmp_path, postgres_db, kms_emulator, kms_admin_client, hsm_token):
    text = manifest("configmap.yaml")["data"]["config.toml"]
    config = tomllib.loads(text)
    container = manifest("deployment.yaml")["spec"]["template"]["spec"]["containers"][0]
    # the KMS key under the config's own alias
    alias = config["keys"]["hot"]["kms_key_id"]
    key_id = kms_admin_client.create_key(KeySpec="ECC_SECG_P256K1",
                                         KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    if any(a["AliasName"] == alias for a in kms_admin_client.list_aliases()["Aliases"]):
        kms_admin_client.update_alias(AliasName=alias, TargetKeyId=key_id)
    else:
        kms_admin_client.create_alias(AliasName=alias, TargetKeyId=key_id)
    # certificates for the server and for the config's own client identities
    ca = CertificateAuthority(tmp_path)
    server_cert = ca.server()
    trader = ca.issue("trader", uris=(config["clients"]["trader"]["identity"],))
    ops = ca.issue("ops", dns=(config["clients"]["ops"]["identity"],))
    store_url = postgres_db.password_url  # the test cluster has no TLS: no sslmode here
    password_file = postgres_db.write_password_file(tmp_path / "pg-password")

    for listen in ("0.0.0.0:50051", "0.0.0.0:8081", "0.0.0.0:9464", "0.0.0.0:9000"):
        text = swap(text, f'"{listen}"', '"127.0.0.1:0"')
    for old, new in ((config["server"]["tls_cert_file"], server_cert.cert_file),
                     (config["server"]["tls_key_file"], server_cert.key_file),
                     (config["server"]["client_ca_file"], ca.cert_file),
                     (config["keys"]["treasury"]["module"], SOFTHSM_MODULE),
                     (config["keys"]["treasury"]["pin_file"], hsm_token.pin_file),
                     (config["store"]["password_file"], password_file),
                     (config["store"]["url"], store_url)):
        text = swap(text, f'"{old}"', f'"{new}"')
    text = swap(text, f'region = "{config["keys"]["hot"]["region"]}"\n',
                f'region = "{config["keys"]["hot"]["region"]}"\n'
                f'endpoint_url = "{kms_emulator.endpoint_url}"\n')
    path = tmp_path / "config.toml"
    path.write_text(text)
    # the container's environment, with the same swap for the store URL
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["WALLET_SIGNER_STORE__URL"] == config["store"]["url"]
    env = {**env, "WALLET_SIGNER_STORE__URL": store_url, "WALLET_SIGNER_CONFIG": str(path)}

    served = start_serve(tmp_path, path, env)
    try:
        log = served.log()
        health_port = logged_port(log, r"health checks \(grpc\.health\.v1 only, plaintext\) on "
                                       r"\S+ \(port (\d+)\)")
        metrics_port = logged_port(log, r"metrics on http://\S+:(\d+)/metrics")
        # the Deployment's probes, as the kubelet asks them: plaintext, no certificate
        with grpc.insecure_channel(f"127.0.0.1:{health_port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                name = container[probe]["grpc"]["service"]
                reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
                assert reply.status == SERVING, f"{probe} ({name!r})"
            for key in config["keys"]:  # readiness per key: every key's own name
                request = health_pb2.HealthCheckRequest(service=f"signer.v1.SignerService/{key}")
                assert health.Check(request, timeout=5).status == SERVING, key
        # the ServiceMonitor's path
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
            assert 'wallet_signer_key_serving{key_id="treasury"} 1.0' in r.read().decode()
        # the clients, over mTLS, under the config's access rules and policy
        tls = {"tls_ca": ca.cert_pem, "tls_cert": trader.cert_pem, "tls_key": trader.key_pem}
        account = RemoteAccount.connect(served.target, "hot", **tls)
        tx = {"chainId": 1, "nonce": 0, "to": TREASURY, "value": 10**17, "gas": 21000,
              "maxFeePerGas": 10**9, "maxPriorityFeePerGas": 10**8, "data": b""}
        assert account.sign_transaction(tx).raw_transaction
        ops_stub = pb_grpc.SignerServiceStub(open_channel(
            served.target, TlsFiles(ca=ca.cert_pem, cert=ops.cert_pem, key=ops.key_pem)))
        listed = ops_stub.ListKeys(pb.ListKeysRequest(), timeout=10).keys
        assert {k.key_id: k.backend for k in listed} == {"hot": "kms", "treasury": "pkcs11"}
        # SIGHUP: an edited policy (at most 0.01 ETH) applies without a restart
        path.write_text(swap(text, 'value_max = "1000000000000000000"',
                             'value_max = "10000000000000000"'))
        served.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "config reloaded: 2 clients" not in served.log():
            assert time.monotonic() < deadline, f"no reload logged:\n{served.log()}"
            time.sleep(0.05)
        with pytest.raises(grpc.RpcError) as denied:
            account.sign_transaction({**tx, "nonce": 1})
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "eth-to-treasury" in denied.value.details()
        assert "budget" not in denied.value.details()
        # and what the new policy allows still signs
        assert account.sign_transaction({**tx, "nonce": 1, "value": 10**16}).raw_transaction
        assert served.proc.poll() is None
    finally:
        served.proc.send_signal(signal.SIGTERM)
        served.proc.wait(20)
    assert served.proc.returncode == 0, served.log()
