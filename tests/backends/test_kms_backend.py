"""KmsBackend on its own: start-up checks, the one Sign call per digest, deadlines."""

import threading
import time

import pytest
from cryptography.hazmat.primitives import serialization
from eth_utils import keccak

from signer import errors
from signer.backends import kms
from signer.backends.kms import ClientSettings, KmsBackend
from signer.config import Config
from signer.service import KeyRing


def test_public_key_comes_from_get_public_key(kms_admin_client, make_kms_key, kms_config):
    key_id = make_kms_key()
    backend = KmsBackend.open("k", kms_config(key_id))
    der = kms_admin_client.get_public_key(KeyId=key_id)["PublicKey"]
    expected = serialization.load_der_public_key(der).public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    assert backend.public_key == expected and len(expected) == 65


def test_one_get_public_key_then_exactly_one_sign_per_digest(kms_faults, make_kms_key, kms_config):
    key_id = make_kms_key()
    config = kms_config(key_id)
    sent = []
    client = kms.shared_client(ClientSettings.from_config(config))
    client.meta.events.register("provide-client-params.kms.Sign",
                                lambda params, **kw: sent.append(dict(params)))
    backend = KmsBackend.open("k", config)
    digests = [keccak(bytes([i])) for i in range(5)]
    for digest in digests:
        assert backend.sign_digest(digest, timeout=5.0)[0] == 0x30  # DER SEQUENCE
    assert kms_faults.count("GetPublicKey", key_id) == 1
    assert kms_faults.count("Sign", key_id) == 5
    assert [p["Message"] for p in sent] == digests
    assert {(p["MessageType"], p["SigningAlgorithm"]) for p in sent} == {("DIGEST", "ECDSA_SHA_256")}


def test_shared_client_per_settings(kms_config):
    one, two = kms_config("alias/a"), kms_config("alias/b")
    assert kms.shared_client(ClientSettings.from_config(one)) is kms.shared_client(
        ClientSettings.from_config(two))
    slower = kms_config("alias/a", read_timeout_seconds=9)
    assert kms.shared_client(ClientSettings.from_config(slower)) is not kms.shared_client(
        ClientSettings.from_config(one))


def test_raw_kms_signatures_have_high_s_that_the_core_normalizes(kms_signer):
    """KMS returns s in either half; the core must be the one making it low."""
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    from signer.eth.signature import HALF_N

    raw_s = [decode_dss_signature(kms_signer.backend.sign_digest(keccak(bytes([i])), None))[1]
             for i in range(40)]
    assert any(s > HALF_N for s in raw_s)  # false with probability 2**-40
    for i in range(8):
        signed = kms_signer.sign_message(bytes([i]))
        assert int.from_bytes(signed.signature[32:64], "big") <= HALF_N


@pytest.mark.parametrize(("spec", "usage"), [
    ("ECC_NIST_P256", "SIGN_VERIFY"),
    ("RSA_2048", "SIGN_VERIFY"),
    ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT"),
])
def test_wrong_key_spec_or_usage_is_refused_at_start_up(make_kms_key, kms_config, spec, usage):
    config = Config(keys={"ops": kms_config(make_kms_key(spec, usage))})
    with pytest.raises(errors.ConfigError) as caught:
        KeyRing.from_config(config)
    message = str(caught.value)
    assert message.startswith("keys.ops (")
    assert f"key spec {spec} and usage {usage}" in message
    assert "needs ECC_SECG_P256K1 with SIGN_VERIFY" in message


def test_alias_and_arn_both_name_the_key(kms_admin_client, make_kms_key, kms_config):
    key_id = make_kms_key()
    kms_admin_client.create_alias(AliasName="alias/test-alias-form", TargetKeyId=key_id)
    arn = kms_admin_client.describe_key(KeyId=key_id)["KeyMetadata"]["Arn"]
    by_alias = KmsBackend.open("a", kms_config("alias/test-alias-form"))
    by_arn = KmsBackend.open("b", kms_config(arn))
    assert by_alias.public_key == by_arn.public_key
    by_alias.sign_digest(keccak(b"x"), None)


def test_unknown_key_is_refused_at_start_up(kms_config):
    with pytest.raises(errors.FailedPrecondition, match=r"keys\.ops \(alias/missing\): .*"
                       r"NotFoundException.*does not exist"):
        KmsBackend.open("ops", kms_config("alias/missing"))


def test_disabled_key_is_refused_at_start_up(kms_faults, make_kms_key, kms_config):
    key_id = make_kms_key()
    kms_faults.add_fault(operation="GetPublicKey", key=key_id, error="DisabledException",
                         message=f"{key_id} is disabled.")
    with pytest.raises(errors.FailedPrecondition, match="disabled; enable it"):
        KmsBackend.open("ops", kms_config(key_id))


def test_unreachable_endpoint_is_unavailable(kms_config):
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = kms_config("alias/x", endpoint_url=f"http://127.0.0.1:{port}", max_attempts=2,
                        connect_timeout_seconds=0.5)
    with pytest.raises(errors.BackendUnavailable, match="unreachable or timed out"):
        KmsBackend.open("ops", config)


def test_deadline_bounds_a_slow_call(kms_faults, make_kms_key, kms_config):
    backend = KmsBackend.open("k", kms_config(make_kms_key()))
    kms_faults.add_fault(latency=1.5)
    started = time.monotonic()
    with pytest.raises(errors.DeadlineExceeded, match="caller's deadline"):
        backend.sign_digest(keccak(b"slow"), timeout=0.3)
    assert 0.25 < time.monotonic() - started < 0.8


def test_no_retry_starts_after_the_deadline(kms_faults, make_kms_key, kms_config):
    """Each attempt is throttled after 0.3 s: the second attempt outlives a 0.4 s deadline,
    so the third (allowed by max_attempts=3) must never be sent."""
    key_id = make_kms_key()
    backend = KmsBackend.open("k", kms_config(key_id, max_attempts=3))
    kms_faults.add_fault(key=key_id, error="ThrottlingException", latency=0.3)
    with pytest.raises(errors.DeadlineExceeded):
        backend.sign_digest(keccak(b"x"), timeout=0.4)
    time.sleep(1.0)  # the abandoned call has long finished its second attempt
    assert kms_faults.count("Sign", key_id) == 2


def test_no_deadline_signs_inline(kms_signer):
    """No deadline (the servicer's None for grpc's ~9.2e18 s): signed on the caller's thread."""
    assert len(kms_signer.backend.sign_digest(keccak(b"no deadline"), None)) > 8


def test_spent_deadline_sends_nothing(kms_faults, make_kms_key, kms_config):
    key_id = make_kms_key()
    backend = KmsBackend.open("k", kms_config(key_id))
    with pytest.raises(errors.DeadlineExceeded) as caught:
        backend.sign_digest(keccak(b"x"), timeout=0.0)
    assert kms_faults.count("Sign", key_id) == 0
    assert str(caught.value) == ("key 'k': KMS did not sign within the caller's deadline "
                                 "(0.000s); nothing was sent to KMS")


def test_calls_run_concurrently(kms_faults, make_kms_key, kms_config):
    backend = KmsBackend.open("k", kms_config(make_kms_key()))
    kms_faults.add_fault(latency=0.4)
    threads = [threading.Thread(target=backend.sign_digest, args=(keccak(bytes([i])), 5.0))
               for i in range(16)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert time.monotonic() - started < 1.2  # serialized would be 6.4 s
