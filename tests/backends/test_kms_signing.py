"""KMS-specific signing behaviour over gRPC. What every backend must do (each transaction type
mined on py-evm, messages, typed data, 1,000 low-s signatures) is in
tests/backends/test_contract.py, which runs on a KMS key through `kms_signer`; this file adds what only the KMS backend risks:
concurrent calls through one shared client and call pool must never cross keys or digests."""

from concurrent.futures import ThreadPoolExecutor

from eth_keys import keys

from signer.eth.signature import HALF_N
from signer.service import KeyRing
from signer.v1 import signer_pb2 as pb


def test_concurrent_calls_on_two_keys_never_cross(serve, open_kms_signer):
    signers = {"a": open_kms_signer("a"), "b": open_kms_signer("b")}
    running = serve(KeyRing(signers.values()))
    addresses = {k: running.stub.GetAddress(pb.GetAddressRequest(key_id=k), timeout=10).address
                 for k in signers}
    assert addresses["a"] != addresses["b"]

    def sign(i: int) -> tuple[str, bytes, bytes]:
        key_id = "ab"[i % 2]
        reply = running.stub.SignMessage(
            pb.SignMessageRequest(key_id=key_id, message=i.to_bytes(4, "big")), timeout=30)
        return key_id, reply.signature, reply.digest

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(sign, range(300)))
    assert len({digest for _, _, digest in results}) == 300
    for key_id, signature, digest in results:
        assert int.from_bytes(signature[32:64], "big") <= HALF_N
        recovered = keys.Signature(signature[:64] + bytes([signature[64] - 27]))
        public_key = recovered.recover_public_key_from_msg_hash(digest)
        assert public_key.to_checksum_address() == addresses[key_id]
