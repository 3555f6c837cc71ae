"""signer.eth.abi against eth-utils' selectors and eth-abi's encoder; signer.eth.batch."""

from typing import Any

import pytest
from eth_abi import encode
from eth_utils import function_signature_to_4byte_selector, to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from signer.eth import batch
from signer.eth.abi import decode_exact, named, parse_signature

SIGNATURES = {
    "transfer(address to,uint256 amount)": "transfer(address,uint256)",
    "approve(address, uint256)": "approve(address,uint256)",
    "f()": "f()",
    "swap((address tokenIn,uint24 fee,bytes path)[] legs, uint deadline)":
        "swap((address,uint24,bytes)[],uint256)",
    "g(tuple(uint8 a, bool[2][] b) t, bytes32 h, string s)":
        "g((uint8,bool[2][]),bytes32,string)",
    "execute((address,(uint256,bytes)[])[3] calls)": "execute((address,(uint256,bytes)[])[3])",
}


@pytest.mark.parametrize("text", SIGNATURES)
def test_signature_canonical_form_and_selector(text: str):
    signature = parse_signature(text)
    assert signature.canonical == SIGNATURES[text]
    assert signature.selector == function_signature_to_4byte_selector(SIGNATURES[text])


@pytest.mark.parametrize(("text", "error"), [
    ("transfer", "expected name(type name, ...)"),
    ("transfer(address to", "unbalanced parentheses"),
    ("transfer(address to))", "unexpected ')' after the argument list"),
    ("transfer(address to, uint256 to)", "argument names must be unique"),
    ("transfer(adress to)", "unknown type 'adress'"),
    ("f(uint256[0] a)", "fixed array size must be at least 1"),
    ("f(fixed128x18 a)", "unsupported type 'fixed128x18'"),
    ("f(() a)", "empty tuple"),
    ("f(uint256 a b)", "expected ',' or ')', got 'b'"),
    ("f(uint256 a; b)", "unexpected character ';'"),
    ("f(function a)", "unsupported type 'function'"),
])
def test_bad_signatures(text: str, error: str):
    with pytest.raises(ValueError, match="^" + __import__("re").escape(error)):
        parse_signature(text)


addresses = st.binary(min_size=20, max_size=20)
TYPES = ("address", "uint256", "bytes", "(uint8,bool,address[])[]", "string", "int16")
values = st.tuples(
    addresses.map(to_checksum_address),
    st.integers(0, 2**256 - 1),
    st.binary(max_size=70),
    st.lists(st.tuples(st.integers(0, 255), st.booleans(),
                       st.lists(addresses.map(to_checksum_address), max_size=2)), max_size=3),
    st.text(max_size=20),
    st.integers(-(2**15), 2**15 - 1),
)


@settings(max_examples=100, deadline=None)
@given(args=values, junk=st.binary(min_size=1, max_size=40), where=st.integers(0, 10**6))
def test_decode_is_exact(args: tuple[Any, ...], junk: bytes, where: int):
    data = encode(TYPES, args)
    decoded = decode_exact(TYPES, data)
    assert decoded is not None
    signature = parse_signature(
        "f(address a,uint256 b,bytes c,(uint8 x,bool y,address[] z)[] d,string e,int16 g)"
    )
    tree = named(signature.params, decoded)
    assert tree["a"] == bytes.fromhex(args[0][2:])
    assert tree["d"] == [{"x": x, "y": y, "z": [bytes.fromhex(a[2:]) for a in z]}
                         for x, y, z in args[3]]
    assert decode_exact(TYPES, data + junk) is None  # trailing bytes
    assert decode_exact(TYPES, data[: where % len(data)]) is None  # truncated
    dirty = bytearray(data)
    dirty[0] = 1  # the address word's high padding
    assert decode_exact(TYPES, bytes(dirty)) is None


def test_non_canonical_offsets_are_refused():
    data = encode(("bytes",), (b"ab",))
    # the same bytes, placed one word further with the offset pointing there
    moved = (64).to_bytes(32, "big") + b"\0" * 32 + data[32:]
    assert decode_exact(("bytes",), moved) is None


def test_invalid_utf8_string_does_not_decode():
    data = encode(("bytes",), (b"\xff\xfe",))
    assert decode_exact(("string",), data) is None


M3 = batch.MULTICALL3_ADDRESS
AGG3V = parse_signature("aggregate3Value((address,bool,uint256,bytes)[] calls)")


def _agg3v(calls: list[tuple[bytes, int, bytes]]) -> bytes:
    return AGG3V.selector + encode(
        ("(address,bool,uint256,bytes)[]",),
        ([(to_checksum_address(t), False, v, d) for t, v, d in calls],),
    )


def test_aggregate3value_inner_calls_carry_their_values():
    calls = batch.inner_calls(M3, 5, _agg3v([(b"\x01" * 20, 2, b"\xaa"), (b"\x02" * 20, 3, b"")]))
    assert calls == (batch.InnerCall(b"\x01" * 20, 2, b"\xaa"), batch.InnerCall(b"\x02" * 20, 3, b""))


def test_aggregate3value_values_must_sum_to_the_transaction_value():
    with pytest.raises(batch.BatchRefused, match="inner values sum to 5 but the transaction "
                                                  "sends 4"):
        batch.inner_calls(M3, 4, _agg3v([(b"\x01" * 20, 2, b""), (b"\x02" * 20, 3, b"")]))


def test_empty_batches_are_refused():
    with pytest.raises(batch.BatchRefused, match="no inner calls"):
        batch.inner_calls(M3, 0, _agg3v([]))


def test_multicall3_selectors_elsewhere_are_ordinary_calls():
    assert batch.inner_calls(b"\x07" * 20, 0, _agg3v([])) is None


def test_too_many_inner_calls_are_refused():
    calls = [(b"\x01" * 20, 0, b"")] * (batch.MAX_INNER_CALLS + 1)
    with pytest.raises(batch.BatchRefused, match="more than 256 inner calls"):
        batch.inner_calls(M3, 0, _agg3v(calls))


def test_malformed_batches_are_refused():
    with pytest.raises(batch.BatchRefused, match="does not decode exactly as aggregate3Value"):
        batch.inner_calls(M3, 0, _agg3v([]) + b"\0")


def test_router_multicall_targets_the_router_with_the_whole_value():
    multicall = parse_signature("multicall(uint256 deadline,bytes[] data)")
    data = multicall.selector + encode(("uint256", "bytes[]"), (9, [b"\x01", b"\x02\x03"]))
    router = b"\x09" * 20
    assert batch.inner_calls(router, 7, data) == (
        batch.InnerCall(router, 7, b"\x01"), batch.InnerCall(router, 7, b"\x02\x03"))


STATIC = parse_signature(
    "f(uint8 a,int16 b,bool c,address d,bytes4 e,(uint24 x,bool y,int8 z)[2] f,uint256[2] g,"
    "int256 h,bytes32 i,uint160 j)"
)
static_values = st.tuples(
    st.integers(0, 255), st.integers(-(2**15), 2**15 - 1), st.booleans(),
    addresses, st.binary(min_size=4, max_size=4),
    st.lists(st.tuples(st.integers(0, 2**24 - 1), st.booleans(), st.integers(-128, 127)),
             min_size=2, max_size=2),
    st.lists(st.integers(0, 2**256 - 1), min_size=2, max_size=2),
    st.integers(-(2**255), 2**255 - 1), st.binary(min_size=32, max_size=32),
    st.integers(0, 2**160 - 1),
)


# words that sit just inside or just outside each static type's range
EDGES = sorted({v % 2**256 for bits in (8, 16, 24, 160, 256)
                for v in (2**bits - 1, 2**bits, 2 ** (bits - 1) - 1, 2 ** (bits - 1),
                          -(2 ** (bits - 1)), -(2 ** (bits - 1)) - 1)} | {0, 1, 2, 3})
words = st.one_of(st.sampled_from(EDGES), st.integers(0, 2**256 - 1),
                  st.binary(min_size=1, max_size=31).map(lambda b: int.from_bytes(b.ljust(32, b"\0"), "big")))


@settings(max_examples=500, deadline=None)
@given(args=static_values, changes=st.lists(st.tuples(st.integers(0, 15), words), max_size=2),
       cut=st.sampled_from([0, 0, 0, -32, -1, 1, 32]))
def test_static_fast_path_agrees_with_re_encoding(args: tuple[Any, ...], changes, cut: int):
    assert STATIC.static_size == 32 * 16
    data = bytearray(encode(STATIC.types, args))
    for index, word in changes:
        data[32 * index: 32 * index + 32] = word.to_bytes(32, "big")
    blob = bytes(data[:cut] if cut < 0 else data + b"\x00" * cut)
    assert STATIC.decode_arguments(blob) == decode_exact(STATIC.types, blob)
    if not changes and cut == 0:
        assert STATIC.decode_arguments(blob) is not None


def test_static_fast_path_agrees_on_every_edge_word_in_every_position():
    base = encode(STATIC.types, (1, -1, True, b"\x01" * 20, b"abcd", [(5, False, -3)] * 2,
                                 [7, 8], -(2**200), b"\x09" * 32, 2**159))
    assert STATIC.decode_arguments(base) is not None
    for index in range(16):
        for word in EDGES:
            blob = base[: 32 * index] + word.to_bytes(32, "big") + base[32 * index + 32:]
            assert STATIC.decode_arguments(blob) == decode_exact(STATIC.types, blob), (index, word)
