"""Health follows the backends: per-key names flip to NOT_SERVING when a real backend starts
failing (KMS faults from the emulator's injector, a SoftHSM token deleted underneath) and back
when the periodic self-test (or a call) signs again; the overall names stay SERVING while any
key serves."""

import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from signer.service import KeyRing
from signer.v1 import signer_pb2 as pb

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE = "signer.v1.SignerService"
INTERVAL = 0.2


def statuses(running, *key_ids):
    """{name: status} for the overall names and each key's name."""
    stub = health_pb2_grpc.HealthStub(running.channel)
    names = ["", SERVICE, *(f"{SERVICE}/{k}" for k in key_ids)]
    return {name: stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status
            for name in names}


def wait_for(running, name, status, seconds=10.0):
    deadline = time.monotonic() + seconds
    while True:
        stub = health_pb2_grpc.HealthStub(running.channel)
        now = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status
        if now == status:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{name!r} stayed {now} for {seconds}s")
        time.sleep(0.05)


def sign_status(running, key_id):
    try:
        running.stub.SignMessage(pb.SignMessageRequest(key_id=key_id, message=b"m"), timeout=10)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@pytest.fixture
def two_kms_keys(kms_faults, serve, open_kms_signer):
    a, b = open_kms_signer("a"), open_kms_signer("b")
    running = serve(KeyRing([a, b]), health_check_interval_seconds=INTERVAL)
    return running, kms_faults, a.backend.key_arn, b.backend.key_arn


def test_disabled_kms_key_flips_its_name_and_recovers(two_kms_keys):
    running, emulator, arn_a, _ = two_kms_keys
    assert set(statuses(running, "a", "b").values()) == {SERVING}
    emulator.add_fault(key=arn_a, error="DisabledException")
    assert sign_status(running, "a") == grpc.StatusCode.FAILED_PRECONDITION
    # at once, from the failed call
    assert statuses(running, "a", "b") == {"": SERVING, SERVICE: SERVING,
                                           f"{SERVICE}/a": NOT_SERVING, f"{SERVICE}/b": SERVING}
    time.sleep(3 * INTERVAL)  # the periodic self-test keeps failing: stays NOT_SERVING
    assert statuses(running, "a")[f"{SERVICE}/a"] == NOT_SERVING
    emulator.clear()
    wait_for(running, f"{SERVICE}/a", SERVING)  # the periodic self-test, no call needed
    assert sign_status(running, "a") == grpc.StatusCode.OK


def test_unreachable_kms_is_found_by_the_self_test_alone(two_kms_keys):
    running, emulator, _, _ = two_kms_keys
    # every key, no calls: only the periodic self-test can notice
    emulator.add_fault(key=None, error="ServiceUnavailable", status=503)
    wait_for(running, f"{SERVICE}/a", NOT_SERVING)
    wait_for(running, f"{SERVICE}/b", NOT_SERVING)
    # no key serving: the overall names follow
    assert statuses(running)[SERVICE] == NOT_SERVING
    assert statuses(running)[""] == NOT_SERVING
    emulator.clear()
    wait_for(running, SERVICE, SERVING)
    wait_for(running, f"{SERVICE}/a", SERVING)
    wait_for(running, f"{SERVICE}/b", SERVING)


def test_softhsm_token_gone_and_back(serve, softhsm_token):
    from tests.support.fixtures_pkcs11 import (
        SECRET,
        create_token_in_other_process,
        import_key,
        open_signer,
    )

    import_key(softhsm_token, "k", SECRET)
    signer = open_signer(softhsm_token, "k")
    running = serve(KeyRing([signer]), health_check_interval_seconds=INTERVAL)
    assert statuses(running, "hsm")[f"{SERVICE}/hsm"] == SERVING
    softhsm_token.delete()  # recovery finds no token: exhausted
    assert sign_status(running, "hsm") == grpc.StatusCode.UNAVAILABLE
    wait_for(running, f"{SERVICE}/hsm", NOT_SERVING)
    assert statuses(running)[SERVICE] == NOT_SERVING  # its only key
    create_token_in_other_process(softhsm_token, "k", SECRET)
    wait_for(running, f"{SERVICE}/hsm", SERVING, seconds=15)
    assert sign_status(running, "hsm") == grpc.StatusCode.OK
