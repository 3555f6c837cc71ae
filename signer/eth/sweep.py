"""Is a transaction a sweep from a draining key version to the active one?

A rotated key's old version keeps signing only what moves its assets to the new address: native
value sent to it, or a token call whose only recipient is it. Decided on the decoded
transaction, exactly as it will be signed (no I/O, no second parse elsewhere).
"""

from signer.eth.abi import decode_exact
from signer.eth.transactions import BLOB, UnsignedTransaction

# selector -> (argument types, index of the recipient, index of the sender or None)
_TOKEN_CALLS: dict[bytes, tuple[tuple[str, ...], int, int | None]] = {
    # ERC-20 transfer(address to, uint256 amount)
    bytes.fromhex("a9059cbb"): (("address", "uint256"), 0, None),
    # ERC-721 safeTransferFrom(address from, address to, uint256 tokenId)
    bytes.fromhex("42842e0e"): (("address", "address", "uint256"), 1, 0),
    # ERC-721 safeTransferFrom(address from, address to, uint256 tokenId, bytes data)
    bytes.fromhex("b88d4fde"): (("address", "address", "uint256", "bytes"), 1, 0),
    # ERC-1155 safeTransferFrom(address from, address to, uint256 id, uint256 value, bytes data)
    bytes.fromhex("f242432a"): (("address", "address", "uint256", "uint256", "bytes"), 1, 0),
}


def sweep_reason(tx: UnsignedTransaction, old: bytes, active: bytes) -> str | None:
    """Why `tx`, signed by `old`, is a sweep to `active` (a short description), or None."""
    if tx.authorization_list or tx.type == BLOB:
        return None  # an EIP-7702 delegation or a blob carrier is never part of a sweep
    if not tx.data:
        return "native value to the active address" if tx.to == active else None
    if not tx.to or tx.value:
        return None
    call = _TOKEN_CALLS.get(tx.data[:4])
    if call is None:
        return None
    types, recipient, sender = call
    values = decode_exact(types, tx.data[4:])
    if values is None or values[recipient] != active:
        return None
    if sender is not None and values[sender] != old:
        return None
    return "token transfer to the active address"
