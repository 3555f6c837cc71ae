"""Every malformed request gets a precise status and message; the server keeps serving."""

import json

import grpc
import pytest
import rlp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signer.v1 import signer_pb2 as pb
from tests.support.bad_requests import BAD_CHECKSUM, CASES, GOOD_TO, INVALID, unsigned

NEVER = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}


@pytest.mark.parametrize(("request_", "status", "fragment"), CASES)
def test_bad_transaction_gets_precise_status(env_server, request_, status, fragment):
    with pytest.raises(grpc.RpcError) as caught:
        env_server.stub.SignTransaction(request_, timeout=10)
    assert caught.value.code() == status
    assert fragment in caught.value.details()
    # and the server still serves
    assert env_server.stub.GetAddress(pb.GetAddressRequest(key_id="hot"), timeout=10).address


TYPED_DATA_CASES = [
    ("", "not valid JSON"),
    ("[]", "expected a JSON object"),
    ('{"types": {}}', "missing primaryType, domain, message"),
    ('{"types": {}, "types": {}, "primaryType": "A", "domain": {}, "message": {}}',
     "duplicate key 'types'"),
    ('{"types": {"EIP712Domain": []}, "primaryType": "Mail", "domain": {}, "message": NaN}',
     "not valid JSON"),
    ('{"types": {"EIP712Domain": []}, "primaryType": "Mail", "domain": {}, "message": {}}',
     "typed_data_json: "),
    # eth-account raises the recursion limit to 100000: without the depth bound this input
    # overflows the C stack and kills the server (it did, before the bound).
    ("[" * 100000 + "]" * 100000, "typed_data_json: nested deeper than 64 levels"),
    ('{"a": "' + "[" * 100 + '", "types": 1}', "typed_data_json: missing primaryType"),
    (json.dumps({"types": {f"T{i}": [{"name": "x", "type": f"T{i + 1}"}] for i in range(300)},
                 "primaryType": "T0", "domain": {}, "message": {}}),
     "typed_data_json: more than 256 struct types"),
]


@pytest.mark.parametrize(("text", "fragment"), TYPED_DATA_CASES)
def test_bad_typed_data(env_server, text, fragment):
    with pytest.raises(grpc.RpcError) as caught:
        env_server.stub.SignTypedData(
            pb.SignTypedDataRequest(key_id="hot", typed_data_json=text), timeout=10
        )
    assert caught.value.code() == INVALID
    assert fragment in caught.value.details()


def _nested_rlp_list(depth: int) -> bytes:
    payload = b"\xc0"
    for _ in range(depth):
        size = len(payload)
        if size < 56:
            payload = bytes([0xC0 + size]) + payload
        else:
            length = size.to_bytes((size.bit_length() + 7) // 8, "big")
            payload = bytes([0xF7 + len(length)]) + length + payload
    return payload


def test_deeply_nested_rlp_is_refused(env_server):
    with pytest.raises(grpc.RpcError) as caught:
        env_server.stub.SignTransaction(unsigned(b"\x02" + _nested_rlp_list(50000)), timeout=30)
    assert caught.value.code() == INVALID
    assert "lists nested deeper than 4 levels" in caught.value.details()


def test_unknown_key_everywhere(env_server):
    for call, request in (
        (env_server.stub.GetAddress, pb.GetAddressRequest(key_id="cold")),
        (env_server.stub.SignMessage, pb.SignMessageRequest(key_id="cold", message=b"hi")),
        (env_server.stub.SignTypedData, pb.SignTypedDataRequest(key_id="cold")),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            call(request, timeout=10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert "'cold'" in caught.value.details()


def test_undecodable_request_bytes(env_server):
    call = env_server.channel.unary_unary("/signer.v1.SignerService/SignTransaction")
    with pytest.raises(grpc.RpcError) as caught:
        call(b"\x12\x05\xff\xfe\xfd\xfc\xfb", timeout=10)  # field 2 with bad UTF-8 / wrong type
    assert caught.value.code() == INVALID
    assert "request is not a valid SignTransaction request message" in caught.value.details()


def test_request_size_is_capped(env_server):
    big = pb.SignMessageRequest(key_id="hot", message=b"\0" * (300 * 1024))
    with pytest.raises(grpc.RpcError) as caught:
        env_server.stub.SignMessage(big, timeout=10)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert env_server.stub.SignMessage(pb.SignMessageRequest(key_id="hot", message=b"ok")).signature


def test_no_method_signs_a_bare_hash():
    names = {m.name for m in pb.DESCRIPTOR.services_by_name["SignerService"].methods}
    assert names == {"ListKeys", "GetAddress", "SignTransaction", "SignTransactions", "SignMessage",
                     "SignTypedData", "SignAuthorization", "EvaluatePolicy", "Reload"}


# --- property tests: random structured requests and random bytes ------------------------------

quantity = st.one_of(
    st.integers(min_value=0, max_value=2**260).map(str), st.text(max_size=8), st.just("")
)
address = st.one_of(
    st.just(""), st.just(GOOD_TO), st.just(BAD_CHECKSUM),
    st.binary(min_size=0, max_size=21).map(lambda b: "0x" + b.hex()), st.text(max_size=44),
)
uint64 = st.integers(min_value=0, max_value=2**64 - 1)
transactions = st.builds(
    pb.Transaction,
    type=st.integers(min_value=0, max_value=6),
    chain_id=uint64, nonce=uint64, to=address, value=quantity, gas_limit=uint64,
    gas_price=quantity, max_fee_per_gas=quantity, max_priority_fee_per_gas=quantity,
    data=st.binary(max_size=64),
    access_list=st.lists(
        st.builds(pb.AccessListEntry, address=address,
                  storage_keys=st.lists(st.binary(min_size=30, max_size=33), max_size=2)),
        max_size=2,
    ),
    authorization_list=st.lists(
        st.builds(pb.Authorization, chain_id=uint64, address=address, nonce=uint64,
                  y_parity=st.integers(0, 3), r=st.binary(max_size=33), s=st.binary(max_size=33)),
        max_size=2,
    ),
)
requests = st.one_of(
    st.builds(pb.SignTransactionRequest, key_id=st.sampled_from(["hot", "x", ""]),
              transaction=transactions),
    st.builds(pb.SignTransactionRequest, key_id=st.just("hot"),
              unsigned_transaction=st.one_of(
                  st.binary(max_size=200),
                  st.tuples(st.integers(0, 5), st.binary(max_size=120)).map(
                      lambda t: bytes([t[0]]) + rlp.encode([t[1]])),
              )),
)

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(request_=requests)
def test_random_structured_requests_never_crash(env_server, request_):
    try:
        reply = env_server.stub.SignTransaction(request_, timeout=10)
    except grpc.RpcError as exc:
        assert exc.code() not in NEVER, exc.details()
        assert exc.code() in {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}
        assert exc.details()
    else:
        assert len(reply.raw_transaction) > 60 and len(reply.transaction_hash) == 32


@FUZZ
@given(payload=st.binary(max_size=300),
       method=st.sampled_from(["ListKeys", "GetAddress", "SignTransaction", "SignMessage",
                               "SignTypedData"]))
def test_random_bytes_never_crash(env_server, payload, method):
    call = env_server.channel.unary_unary(f"/signer.v1.SignerService/{method}")
    try:
        call(payload, timeout=10)
    except grpc.RpcError as exc:
        assert exc.code() not in NEVER, exc.details()
    assert env_server.stub.GetAddress(pb.GetAddressRequest(key_id="hot"), timeout=10).address


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payloads=st.lists(st.one_of(st.binary(max_size=120),
                                   requests.map(lambda r: r.SerializeToString())), max_size=8))
def test_random_streams_answer_each_message_like_unary(env_server, payloads):
    """Random bytes and random requests in one stream: each answered in order, with what unary
    SignTransaction answers for the same bytes, and never UNKNOWN/INTERNAL."""
    stream = env_server.channel.stream_stream(
        "/signer.v1.SignerService/SignTransactions",
        response_deserializer=pb.SignTransactionsResponse.FromString)
    unary = env_server.channel.unary_unary(
        "/signer.v1.SignerService/SignTransaction",
        response_deserializer=pb.SignTransactionResponse.FromString)
    replies = list(stream(iter(payloads), timeout=30))
    assert [r.index for r in replies] == list(range(len(payloads)))
    for payload, reply in zip(payloads, replies, strict=True):
        try:
            expected = pb.SignTransactionsResponse(index=reply.index, signed=unary(payload, timeout=10))
        except grpc.RpcError as exc:
            assert exc.code() not in NEVER, exc.details()
            expected = pb.SignTransactionsResponse(
                index=reply.index, error=pb.Status(code=exc.code().value[0], message=exc.details()))
        assert reply == expected
