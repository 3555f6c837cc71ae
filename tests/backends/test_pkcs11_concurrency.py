"""Signing really runs in parallel on SoftHSM, and stays correct under stress.

python-pkcs11 initializes without CKF_OS_LOCKING_OK; the backend re-initializes the library
with it. The stress run happens in a child process so that a crash (the symptom without the fix)
fails the test instead of killing pytest.
"""

import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

from eth_account import Account
from eth_account.messages import encode_defunct

from signer.service import KeyRing
from signer.v1 import signer_pb2 as pb
from tests.support.fixtures_pkcs11 import generate_key, open_signer

STRESS = textwrap.dedent("""
    import sys, threading
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, utils
    from signer.backends.pkcs11 import Pkcs11Backend
    from signer.config import Pkcs11KeyConfig

    cfg = Pkcs11KeyConfig(backend="pkcs11", token_label=sys.argv[1], pin_file=sys.argv[2],
                          key_label="stress", pool_size=4)
    backend = Pkcs11Backend.open("stress", cfg)
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256K1(), backend.public_key)
    prehashed = ec.ECDSA(utils.Prehashed(hashes.SHA256()))
    failures = []

    def work(seed):
        # raw sessions of their own, straight into C_Sign from 4 threads at once
        for i in range(200):
            digest = bytes([seed, i % 256]) * 16
            raw = backend.sign_digest(digest, None)
            der = utils.encode_dss_signature(int.from_bytes(raw[:32], "big"),
                                             int.from_bytes(raw[32:], "big"))
            try:
                public.verify(der, digest, prehashed)
            except InvalidSignature as exc:
                failures.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads: t.start()
    for t in threads: t.join()
    backend.close()
    print("failures", len(failures))
    sys.exit(1 if failures else 0)
""")


def test_four_threads_signing_at_once_stay_correct(softhsm_token):
    generate_key(softhsm_token, "stress")
    for _ in range(3):
        run = subprocess.run([sys.executable, "-c", STRESS, softhsm_token.label,
                              str(softhsm_token.pin_file)],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, (run.returncode, run.stdout, run.stderr[-2000:])
        assert "failures 0" in run.stdout


def test_pool_never_shares_a_session(softhsm_token, monkeypatch):
    generate_key(softhsm_token, "k")
    signer = open_signer(softhsm_token, "k", pool_size=3)
    backend = signer.backend
    in_use: set[int] = set()
    seen: set[int] = set()
    clash = []
    original = backend._fresh

    def tracking(slot):
        fresh = original(slot)
        handle = fresh.session.handle
        if handle in in_use:
            clash.append(handle)
        in_use.add(handle)
        seen.add(handle)
        return fresh

    real_put = backend._pool.put

    def put(slot):
        if slot is not None:
            in_use.discard(slot.session.handle)
        real_put(slot)

    monkeypatch.setattr(backend, "_fresh", tracking)
    monkeypatch.setattr(backend._pool, "put", put)
    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: signer.sign_message(str(i).encode()), range(400)))
    finally:
        backend.close()
    assert clash == []
    assert 1 < len(seen) <= 3  # more than one session was used, never more than the pool


def test_sixteen_grpc_callers(serve, softhsm_token):
    generate_key(softhsm_token, "k")
    signer = open_signer(softhsm_token, "k", pool_size=4)
    server = serve(KeyRing([signer]))

    def call(i):
        message = f"message {i}".encode()
        reply = server.stub.SignMessage(pb.SignMessageRequest(key_id="hsm", message=message),
                                        timeout=30)
        return Account.recover_message(encode_defunct(message), signature=reply.signature)

    with ThreadPoolExecutor(16) as pool:
        recovered = list(pool.map(call, range(320)))
    assert set(recovered) == {signer.address}
