"""eth_signTransaction and eth_sendTransaction: fill from the node, sign on the one path, submit.

Filling follows what wallets do: `chainId` from the node (cached; a different one from the
client is an error), `gas` from `eth_estimateGas`, fees as EIP-1559 when the latest block has a
base fee (tip from `eth_maxPriorityFeePerGas`, `maxFeePerGas` = 2 x base fee + tip) else
`eth_gasPrice`; a blob transaction's `maxFeePerBlobGas` = 2 x `eth_blobBaseFee` (room for the
blob base fee to rise over several full blocks, as for the execution fee). Nonces for
`eth_sendTransaction` come from the shared store, with the node's pending count as the floor,
so concurrent sends on any replica never reuse one.
"""

import logging
import re
import threading
from typing import Any

from eth_utils.address import to_checksum_address

from signer.app.application import Application
from signer.app.caller import Caller
from signer.errors import InvalidRequest, SignerError
from signer.eth import blobs, rpc_json
from signer.eth import transactions as txs
from signer.eth.rpc_json import TransactionRequest
from signer.jsonrpc.errors import JsonRpcError
from signer.jsonrpc.upstream import Upstream, UpstreamUnavailable
from signer.store import Store

log = logging.getLogger(__name__)

# maxFeePerBlobGas filled as this many times eth_blobBaseFee.
BLOB_FEE_HEADROOM = 2
# How many times one eth_sendTransaction re-syncs its nonce after the node said "too low".
MAX_NONCE_ATTEMPTS = 3
_NONCE_TOO_LOW = re.compile(r"nonce.{0,40}too low|NonceTooLow", re.IGNORECASE | re.DOTALL)
_ALREADY_KNOWN = re.compile(r"already known|known transaction|AlreadyKnown", re.IGNORECASE)


class Filler:
    """Fills what a client left out of a transaction from the upstream node."""

    def __init__(self, upstream: Upstream) -> None:
        self._upstream = upstream
        self._chain_id: int | None = None
        self._lock = threading.Lock()

    def chain_id(self) -> int:
        if self._chain_id is None:
            value = _quantity(self._upstream.call("eth_chainId", []), "eth_chainId")
            with self._lock:
                self._chain_id = value
        return self._chain_id

    def pending_count(self, address: bytes) -> int:
        count = self._upstream.call(
            "eth_getTransactionCount", [rpc_json.to_data(address), "pending"]
        )
        return _quantity(count, "eth_getTransactionCount")

    def fill(self, request: TransactionRequest, sender: bytes) -> TransactionRequest:
        chain = self.chain_id()
        if request.chain_id is not None and request.chain_id != chain:
            raise InvalidRequest(
                f"chainId: {hex(request.chain_id)} is not the upstream node's chain id {hex(chain)}"
            )
        request = request.with_fields(chain_id=chain)
        request = self._fill_fees(request)
        if request.gas_limit is None:
            estimate = self._upstream.call(
                "eth_estimateGas", [rpc_json.call_object(request, sender)]
            )
            request = request.with_fields(gas_limit=_quantity(estimate, "eth_estimateGas"))
        return request

    def _fill_fees(self, request: TransactionRequest) -> TransactionRequest:
        # Without a type or any fee field the fee market decides (an access list alone
        # rides in a type 2 transaction on a chain with a base fee, as wallets do).
        fees_given = any(
            fee is not None
            for fee in (request.gas_price, request.max_fee_per_gas,
                        request.max_priority_fee_per_gas)
        )
        market_decides = (
            request.type is None and not fees_given and request.authorization_list is None
            and not request.carries_blobs
        )
        tx_type = None if market_decides else request.implied_type()
        if tx_type in (txs.LEGACY, txs.ACCESS_LIST):
            if request.gas_price is not None:
                return request.with_fields(type=tx_type)
            return request.with_fields(type=tx_type, gas_price=self._gas_price())
        if tx_type == txs.BLOB and request.max_fee_per_blob_gas is None:
            blob_base_fee = _quantity(self._upstream.call("eth_blobBaseFee", []),
                                      "eth_blobBaseFee")
            request = request.with_fields(max_fee_per_blob_gas=BLOB_FEE_HEADROOM * blob_base_fee)
        if (
            tx_type is not None
            and request.max_fee_per_gas is not None
            and request.max_priority_fee_per_gas is not None
        ):
            return request.with_fields(type=tx_type)
        base_fee = self._base_fee()
        if tx_type is None:
            if base_fee is None:
                tx_type = txs.ACCESS_LIST if request.access_list is not None else txs.LEGACY
                rpc_json.check_fields_fit(request, tx_type)
                return request.with_fields(type=tx_type, gas_price=self._gas_price())
            tx_type = txs.DYNAMIC_FEE
        tip = request.max_priority_fee_per_gas
        if tip is None:
            tip = _quantity(self._upstream.call("eth_maxPriorityFeePerGas", []),
                            "eth_maxPriorityFeePerGas")
            if request.max_fee_per_gas is not None:
                tip = min(tip, request.max_fee_per_gas)
        max_fee = request.max_fee_per_gas
        if max_fee is None:
            max_fee = 2 * base_fee + tip if base_fee is not None else max(self._gas_price(), tip)
        return request.with_fields(type=tx_type, max_fee_per_gas=max_fee,
                                   max_priority_fee_per_gas=tip)

    def blob_network_form(self) -> blobs.NetworkForm:
        """The sidecar form the node's current fork takes: EIP-7594 cell proofs from Osaka on,
        EIP-4844 blob proofs before. The fork is read from `eth_config` (EIP-7910): Osaka is
        the fork that added the P256VERIFY precompile (EIP-7951). A node without eth_config
        predates Osaka."""
        try:
            config = self._upstream.call("eth_config", [])
        except JsonRpcError:
            return "eip4844"
        current = config.get("current") if isinstance(config, dict) else None
        precompiles = current.get("precompiles") if isinstance(current, dict) else None
        if not isinstance(precompiles, dict):
            raise UpstreamUnavailable("upstream node: malformed eth_config result")
        return "eip7594" if "P256VERIFY" in precompiles else "eip4844"

    def _gas_price(self) -> int:
        return _quantity(self._upstream.call("eth_gasPrice", []), "eth_gasPrice")

    def _base_fee(self) -> int | None:
        block = self._upstream.call("eth_getBlockByNumber", ["latest", False])
        if not isinstance(block, dict):
            raise UpstreamUnavailable("upstream node: no latest block")
        base = block.get("baseFeePerGas")
        return None if base is None else _quantity(base, "baseFeePerGas")


class TransactionService:
    """Both transaction methods; every signature goes through `Application.signing`."""

    def __init__(self, app: Application, store: Store, upstream: Upstream | None) -> None:
        self._app = app
        self._store = store
        self._upstream = upstream
        self._filler = Filler(upstream) if upstream is not None else None

    @property
    def filler(self) -> Filler | None:
        return self._filler

    def sign(self, caller: Caller, request: TransactionRequest, method: str) -> str:
        """eth_signTransaction: the raw signed transaction. Fills chainId, gas and fees when
        there is an upstream; never reserves a nonce (the caller owns it)."""
        sender = _sender(request)
        if request.nonce is None:
            raise InvalidRequest(
                "nonce: required for eth_signTransaction (use eth_sendTransaction to have one "
                "assigned)"
            )
        if request.blobs is not None:
            raise InvalidRequest(
                "blobs: eth_signTransaction signs the payload only: strip the sidecar, send its "
                "blobVersionedHashes and wrap the signed payload with the sidecar yourself (or "
                "use eth_sendTransaction)"
            )
        with self._app.signing(caller, "SignTransaction", address=sender) as signing:
            signing.note(door="jsonrpc", jsonrpc_method=method)
            if self._filler is not None:
                request = self._filler.fill(request, sender)
            tx = rpc_json.unsigned_transaction(request)
            signed = signing.sign_transaction(tx, None)
        return rpc_json.to_data(signed.raw_transaction)

    def send(self, caller: Caller, request: TransactionRequest, method: str) -> str:
        """eth_sendTransaction: fill, reserve a nonce, sign, submit; the transaction hash."""
        if self._upstream is None or self._filler is None:
            raise JsonRpcError(-32601, f"{method} needs an upstream node ([jsonrpc] upstream)")
        sender = _sender(request)
        sidecar: blobs.Sidecar | None = None
        filled: TransactionRequest | None = None
        for attempt in range(1, MAX_NONCE_ATTEMPTS + 1):
            reserved: int | None = None
            try:
                with self._app.signing(caller, "SignTransaction", address=sender) as signing:
                    signing.note(door="jsonrpc", jsonrpc_method=method,
                                 then="eth_sendRawTransaction")
                    if filled is None:
                        # the KZG work only for a caller the path has let through
                        request, sidecar = _with_sidecar(request)
                        filled = self._filler.fill(request, sender)
                    nonce = filled.nonce
                    if nonce is None:
                        assert filled.chain_id is not None
                        floor = self._filler.pending_count(sender)
                        nonce = reserved = self._store.next_nonce(filled.chain_id, sender, floor)
                    tx = rpc_json.unsigned_transaction(filled.with_fields(nonce=nonce))
                    signed = signing.sign_transaction(tx, None)
            except BaseException:
                self._release(filled, sender, reserved)
                raise
            # The outcome record is durable: only now may the signature leave.
            tx_hash = rpc_json.to_data(signed.transaction_hash)
            try:
                raw = signed.raw_transaction
                if sidecar is not None:
                    raw = blobs.network_form(raw, sidecar, self._filler.blob_network_form())
                self._upstream.call("eth_sendRawTransaction", [rpc_json.to_data(raw)])
                return tx_hash
            except JsonRpcError as exc:
                if _ALREADY_KNOWN.search(exc.message):
                    return tx_hash
                if reserved is not None and _NONCE_TOO_LOW.search(exc.message):
                    if attempt < MAX_NONCE_ATTEMPTS:
                        log.info("nonce %d of %s too low for the node: re-syncing (attempt %d)",
                                 nonce, to_checksum_address(sender), attempt)
                        continue
                self._release(filled, sender, reserved)
                log.warning("transaction %s was signed but the node refused it: %s",
                            tx_hash, exc.message[:200])
                raise JsonRpcError(
                    exc.code, f"{exc.message} (transaction {tx_hash} was signed, not accepted)",
                    exc.data,
                ) from None
            except UpstreamUnavailable as exc:
                self._release(filled, sender, reserved)
                log.warning("transaction %s was signed but not submitted: %s", tx_hash, exc)
                raise UpstreamUnavailable(
                    f"{exc}: transaction {tx_hash} was signed but not submitted"
                ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _release(self, filled: TransactionRequest | None, sender: bytes, nonce: int | None) -> None:
        """Give a reserved nonce back (its transaction never reached the node)."""
        if nonce is None or filled is None or filled.chain_id is None:
            return
        try:
            if not self._store.release_nonce(filled.chain_id, sender, nonce):
                log.warning("nonce %d of %s could not be given back (a later one is reserved): "
                            "later transactions wait until it is used",
                            nonce, to_checksum_address(sender))
        except SignerError as exc:
            log.warning("nonce %d could not be given back: %s", nonce, exc)


def _with_sidecar(
    request: TransactionRequest,
) -> tuple[TransactionRequest, blobs.Sidecar | None]:
    """eth_sendTransaction of a blob transaction: the sidecar from `blobs`, and the versioned
    hashes (filled, or checked against the ones given)."""
    if request.implied_type() != txs.BLOB:
        return request, None
    if request.blobs is None:
        raise InvalidRequest(
            "blobs: required to send a blob transaction (the node needs the sidecar); to sign "
            "the payload only, use eth_signTransaction"
        )
    sidecar = blobs.sidecar(list(request.blobs))
    given = request.blob_versioned_hashes
    if given is not None:
        if len(given) != len(sidecar.versioned_hashes):
            raise InvalidRequest(
                f"blobVersionedHashes: {len(given)} hashes for {len(sidecar.blobs)} blobs"
            )
        for i, (mine, theirs) in enumerate(zip(sidecar.versioned_hashes, given, strict=True)):
            if mine != theirs:
                raise InvalidRequest(
                    f"blobVersionedHashes[{i}]: {rpc_json.to_data(theirs)} is not the versioned "
                    f"hash of blobs[{i}] ({rpc_json.to_data(mine)})"
                )
    return request.with_fields(blob_versioned_hashes=sidecar.versioned_hashes), sidecar


def _sender(request: TransactionRequest) -> bytes:
    if request.sender is None:
        raise InvalidRequest("from: required (the address of the key to sign with)")
    return request.sender


def _quantity(value: Any, what: str) -> int:
    try:
        return rpc_json.quantity(value, what)
    except InvalidRequest:
        raise UpstreamUnavailable(f"upstream node: malformed {what} result") from None
