"""Batching wrappers: the inner calls of Multicall3 and of `multicall(bytes[])` routers.

A policy judges each inner call on its own, so it must see them exactly as the wrapper will
execute them. Multicall3 calls each target with its own value (aggregate3Value) or none; a
router's `multicall(bytes[])` delegatecalls itself, so every inner call targets the same
contract and sees the transaction's whole value.
"""

from dataclasses import dataclass

from signer.eth.abi import FunctionSignature, decode_exact, parse_signature

# Multicall3 is deployed at this address on every chain that has it (github.com/mds1/multicall).
MULTICALL3_ADDRESS = bytes.fromhex("cA11bde05977b3631167028862bE2a173976CA11")
# A batch holding more calls than this is refused rather than judged.
MAX_INNER_CALLS = 256

_MULTICALL3 = {
    s.selector: s
    for s in map(
        parse_signature,
        (
            "aggregate((address target,bytes callData)[] calls)",
            "tryAggregate(bool requireSuccess,(address target,bytes callData)[] calls)",
            "blockAndAggregate((address target,bytes callData)[] calls)",
            "tryBlockAndAggregate(bool requireSuccess,(address target,bytes callData)[] calls)",
            "aggregate3((address target,bool allowFailure,bytes callData)[] calls)",
            "aggregate3Value("
            "(address target,bool allowFailure,uint256 value,bytes callData)[] calls)",
        ),
    )
}
_SELF_MULTICALL = {
    s.selector: s
    for s in map(
        parse_signature, ("multicall(bytes[] data)", "multicall(uint256 deadline,bytes[] data)")
    )
}
BATCH_SELECTORS = frozenset(_MULTICALL3) | frozenset(_SELF_MULTICALL)


@dataclass(frozen=True, slots=True)
class InnerCall:
    to: bytes
    value: int
    data: bytes


class BatchRefused(ValueError):
    """A batching call that cannot be judged (malformed, too large, value stranded)."""


def batch_signature(to: bytes, data: bytes) -> FunctionSignature | None:
    """The wrapper signature if a call to `to` with `data` is a batch, else None."""
    selector = data[:4]
    if selector in _SELF_MULTICALL:
        return _SELF_MULTICALL[selector]
    if to == MULTICALL3_ADDRESS and selector in _MULTICALL3:
        return _MULTICALL3[selector]
    return None


def inner_calls(to: bytes, value: int, data: bytes) -> tuple[InnerCall, ...] | None:
    """The calls a batch will make, None if this is not a batch; BatchRefused if unjudgeable."""
    calls = _inner_calls(to, value, data)
    if calls is not None and not calls:
        raise BatchRefused("no inner calls (an empty batch is allowed by no rule)")
    return calls


def _inner_calls(to: bytes, value: int, data: bytes) -> tuple[InnerCall, ...] | None:
    signature = batch_signature(to, data)
    if signature is None:
        return None
    values = decode_exact(signature.types, data[4:])
    if values is None:
        raise BatchRefused(f"calldata does not decode exactly as {signature.canonical}")
    entries = values[-1]
    if len(entries) > MAX_INNER_CALLS:
        raise BatchRefused(f"more than {MAX_INNER_CALLS} inner calls")
    if signature.name == "multicall":
        return tuple(InnerCall(to, value, bytes(inner)) for inner in entries)
    if signature.name == "aggregate3Value":
        calls = tuple(InnerCall(e[0], e[2], bytes(e[3])) for e in entries)
        total = sum(c.value for c in calls)
        if total != value:
            raise BatchRefused(
                f"inner values sum to {total} but the transaction sends {value} "
                "(Multicall3 reverts)"
            )
        return calls
    if value:
        raise BatchRefused(
            f"{signature.name} forwards no value: {value} wei would stay in Multicall3 "
            "for anyone to take"
        )
    return tuple(InnerCall(e[0], 0, bytes(e[-1])) for e in entries)
