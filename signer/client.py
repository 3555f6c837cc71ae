"""RemoteAccount: an eth-account `BaseAccount` whose key lives in wallet-signer.

    account = RemoteAccount.connect("127.0.0.1:50051", "hot")
    signed = account.sign_transaction({...})      # like LocalAccount.sign_transaction
    signed = account.sign_transaction({...}, blobs=[...])  # type 3 in the network form
    auth = account.sign_authorization({"chainId": 1, "address": ..., "nonce": 0})  # EIP-7702
    results = account.sign_transactions([{...}, {...}])  # many over one stream, in order

Every refusal by the server raises SigningRefused (a grpc.RpcError: `code()`, `details()`;
for policy denials also `policy`, `rule` and `reason`).
    w3.middleware_onion.inject(SignAndSendRawMiddlewareBuilder.build(account), layer=0)

Importing this module registers RemoteAccount with web3.py's signing middleware (when web3 is
installed), so the middleware takes it wherever it takes a LocalAccount.
"""

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from eth_account.datastructures import (
    SignedMessage,
    SignedSetCodeAuthorization,
    SignedTransaction,
)
from eth_account.messages import SignableMessage
from eth_account.signers.base import BaseAccount
from eth_keys.datatypes import Signature
from eth_typing import ChecksumAddress, Hash32
from eth_utils.address import to_canonical_address, to_checksum_address
from hexbytes import HexBytes

from signer.errors import InvalidRequest
from signer.eth import blobs as blob_sidecars
from signer.eth.transactions import UnsignedAuthorization, authorization_digest
from signer.grpc.errors import POLICY_HEADER, POLICY_REASON_HEADER, POLICY_RULE_HEADER
from signer.v1 import signer_pb2 as pb
from signer.v1 import signer_pb2_grpc as pb_grpc

DEFAULT_TIMEOUT = 30.0
_STATUS_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


class SigningRefused(grpc.RpcError):
    """The server refused a request: raised by every unary call, and in `sign_transactions`'s
    results for each refused transaction. A grpc.RpcError with grpc's accessors, so handlers
    written for grpc's own errors keep working: `code()` is the status, `details()` its
    message. A policy denial names the `policy`, the `rule` that refused it ("" for default
    deny) and the `reason`; these are None for other refusals (and in a stream's results,
    whose per-message status carries only the code and message)."""

    def __init__(
        self,
        code: grpc.StatusCode,
        details: str,
        *,
        policy: str | None = None,
        rule: str | None = None,
        reason: str | None = None,
        trailing_metadata: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(f"{code.name}: {details}")
        self._code = code
        self._details = details
        self._trailing_metadata = trailing_metadata
        self.policy = policy
        self.rule = rule
        self.reason = reason

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> Any:
        """(key, value) pairs, as grpc's own errors give them."""
        return self._trailing_metadata

    @classmethod
    def of(cls, error: grpc.RpcError) -> "SigningRefused":
        """The typed form of an error a unary stub call raised."""
        code = error.code() if callable(getattr(error, "code", None)) else None
        details = error.details() if callable(getattr(error, "details", None)) else None
        trailers = error.trailing_metadata() if callable(
            getattr(error, "trailing_metadata", None)) else None
        pairs: Any = trailers or ()
        metadata: tuple[tuple[str, str], ...] = tuple(
            (str(key), value) for key, value in pairs if isinstance(value, str))
        fields = dict(metadata)
        return cls(
            code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN,
            details or "",
            policy=fields.get(POLICY_HEADER),
            rule=fields.get(POLICY_RULE_HEADER),
            reason=fields.get(POLICY_REASON_HEADER),
            trailing_metadata=metadata,
        )

PemSource = str | os.PathLike[str] | bytes


@dataclass(frozen=True)
class TlsFiles:
    """How a client reaches the server: the CA that signed the server's certificate and, for
    mTLS, the client's own certificate and key (paths or PEM bytes). All None: plaintext."""

    ca: PemSource | None = None
    cert: PemSource | None = None
    key: PemSource | None = None
    server_name: str | None = None  # when the certificate names another host than the target

    def __repr__(self) -> str:  # never show key material, even as bytes
        return f"TlsFiles(tls={self.ca is not None}, client_cert={self.cert is not None})"


def open_channel(target: str, tls: TlsFiles | None = None) -> grpc.Channel:
    """A channel to `target` as `tls` says: plaintext, TLS, or mTLS."""
    if tls is None or (tls.ca is None and tls.cert is None and tls.key is None):
        return grpc.insecure_channel(target)
    if tls.ca is None:
        raise ValueError("tls_ca is required for TLS (the CA that signed the server certificate)")
    if (tls.cert is None) != (tls.key is None):
        raise ValueError("give both tls_cert and tls_key (mTLS), or neither")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_pem(tls.ca),
        private_key=_pem(tls.key) if tls.key is not None else None,
        certificate_chain=_pem(tls.cert) if tls.cert is not None else None,
    )
    options = [("grpc.ssl_target_name_override", tls.server_name)] if tls.server_name else []
    return grpc.secure_channel(target, credentials, options=options)


def _pem(source: PemSource) -> bytes:
    return source if isinstance(source, bytes) else Path(source).read_bytes()


class RemoteAccount(BaseAccount):
    def __init__(
        self, channel: grpc.Channel, key_id: str, *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> None:
        self._stub = pb_grpc.SignerServiceStub(channel)
        self._key_id = key_id
        self._timeout = timeout
        reply = self._call(self._stub.GetAddress, pb.GetAddressRequest(key_id=key_id))
        self._address = ChecksumAddress(reply.address)
        self.public_key = reply.public_key

    @classmethod
    def connect(
        cls,
        target: str,
        key_id: str,
        *,
        tls_ca: PemSource | None = None,
        tls_cert: PemSource | None = None,
        tls_key: PemSource | None = None,
        tls_server_name: str | None = None,
        **kwargs: Any,
    ) -> "RemoteAccount":
        """Connect to `target`: plaintext without `tls_ca`, TLS with it, mTLS with the client's
        own `tls_cert` and `tls_key` too (file paths or PEM bytes)."""
        tls = TlsFiles(tls_ca, tls_cert, tls_key, tls_server_name)
        return cls(open_channel(target, tls), key_id, **kwargs)

    @property
    def address(self) -> ChecksumAddress:
        return self._address

    @property
    def key_id(self) -> str:
        return self._key_id

    def _call(self, method: Any, request: Any) -> Any:
        """One unary call; the server's refusal as SigningRefused."""
        try:
            return method(request, timeout=self._timeout)
        except grpc.RpcError as error:
            raise SigningRefused.of(error) from None

    def sign_transaction(
        self, transaction_dict: Mapping[str, Any], blobs: Any = None
    ) -> SignedTransaction:
        """Like LocalAccount.sign_transaction. With `blobs` (a type 3 transaction), the sidecar
        is made here and `raw_transaction` is the network form eth-account returns (EIP-7594:
        wrapper version 1, cell proofs); `blobVersionedHashes` are filled from the blobs, or
        checked against them. Only the payload is sent to the server and signed; `hash` is the
        transaction hash (keccak of the signed payload)."""
        if not blobs:
            reply = self._call(self._stub.SignTransaction, self._request(transaction_dict))
            return _signed_transaction(reply)
        try:
            sidecar = blob_sidecars.sidecar([bytes(HexBytes(b)) for b in blobs])
        except InvalidRequest as exc:
            raise ValueError(str(exc)) from None
        hashes = list(sidecar.versioned_hashes)
        given = transaction_dict.get("blobVersionedHashes")
        if given is not None and [bytes(HexBytes(h)) for h in given] != hashes:
            raise ValueError("blobVersionedHashes do not match the versioned hashes of the blobs")
        tx = {**transaction_dict, "blobVersionedHashes": hashes}
        tx.setdefault("type", 3)
        reply = self._call(self._stub.SignTransaction, self._request(tx))
        signed = _signed_transaction(reply)
        raw = blob_sidecars.network_form(bytes(reply.raw_transaction), sidecar, "eip7594")
        return SignedTransaction(
            raw_transaction=HexBytes(raw), hash=signed.hash, r=signed.r, s=signed.s, v=signed.v
        )

    def sign_authorization(
        self, authorization_dict: Mapping[str, Any]
    ) -> SignedSetCodeAuthorization:
        """Like LocalAccount.sign_authorization (EIP-7702): `chainId`, `address` (the delegate)
        and `nonce`; the signed tuple, ready for a type 4 transaction's authorizationList."""
        if not isinstance(authorization_dict, Mapping):
            raise TypeError(
                f"authorization_dict must be dict-like, got {authorization_dict!r}"
            )
        chain_id = _int(authorization_dict["chainId"])
        delegate = to_canonical_address(authorization_dict["address"])
        nonce = _int(authorization_dict["nonce"])
        reply = self._call(self._stub.SignAuthorization, pb.SignAuthorizationRequest(
            key_id=self._key_id, chain_id=chain_id, address=to_checksum_address(delegate),
            nonce=nonce,
        ))
        signed = reply.authorization
        r, s = int.from_bytes(signed.r, "big"), int.from_bytes(signed.s, "big")
        digest = authorization_digest(UnsignedAuthorization(chain_id, delegate, nonce))
        return SignedSetCodeAuthorization(
            chain_id=signed.chain_id,
            address=to_canonical_address(signed.address),
            nonce=signed.nonce,
            y_parity=signed.y_parity,
            r=r,
            s=s,
            signature=Signature(vrs=(signed.y_parity, r, s)),
            authorization_hash=HexBytes(digest),
        )

    def sign_transactions(
        self, transactions: Iterable[Mapping[str, Any]], *, timeout: float | None = None
    ) -> list[SignedTransaction | Exception]:
        """Sign many transactions over one `SignTransactions` stream; one result per input, in
        order: the SignedTransaction `sign_transaction` would return, or the exception it would
        raise (ValueError/TypeError for a dict refused here, before sending; SigningRefused
        with the server's status otherwise). One refusal does not stop the others.

        `timeout` bounds the whole batch (default: the account's timeout); if the stream itself
        fails (deadline, server unreachable) grpc.RpcError is raised and nothing is returned.
        The server answers in order without reading ahead, so a long batch costs it no memory.
        """
        results: list[SignedTransaction | Exception | None] = []
        slots: list[int] = []  # stream index -> position in results
        requests: list[pb.SignTransactionRequest] = []
        for tx in transactions:
            try:
                requests.append(self._request(tx))
            except (ValueError, TypeError, KeyError) as refused:
                results.append(refused)
                continue
            slots.append(len(results))
            results.append(None)
        if requests:
            replies = self._stub.SignTransactions(
                iter(requests), timeout=self._timeout if timeout is None else timeout
            )
            for reply in replies:
                results[slots[reply.index]] = (
                    _signed_transaction(reply.signed)
                    if reply.HasField("signed")
                    else SigningRefused(_STATUS_BY_NUMBER[reply.error.code], reply.error.message)
                )
        if any(result is None for result in results):
            raise RuntimeError("the server ended the stream without answering every transaction")
        return [result for result in results if result is not None]

    def _request(self, transaction_dict: Mapping[str, Any]) -> pb.SignTransactionRequest:
        sender = transaction_dict.get("from")
        if sender is not None and to_checksum_address(sender) != self._address:
            raise ValueError(f"transaction 'from' {sender} is not this account ({self._address})")
        return pb.SignTransactionRequest(
            key_id=self._key_id, transaction=transaction_to_proto(transaction_dict)
        )

    def sign_message(self, signable_message: SignableMessage) -> SignedMessage:
        """EIP-191 personal messages (`encode_defunct`); typed data goes to `sign_typed_data`."""
        if signable_message.version != b"E":
            raise ValueError(
                "wallet-signer signs EIP-191 personal messages (encode_defunct) here; "
                "use sign_typed_data for EIP-712"
            )
        reply = self._call(
            self._stub.SignMessage,
            pb.SignMessageRequest(key_id=self._key_id, message=signable_message.body),
        )
        return _signed_message(reply.signature, reply.digest)

    def sign_typed_data(
        self,
        domain_data: dict[str, Any] | None = None,
        message_types: dict[str, Any] | None = None,
        message_data: dict[str, Any] | None = None,
        full_message: dict[str, Any] | None = None,
    ) -> SignedMessage:
        """Same arguments as LocalAccount.sign_typed_data; signed by the server."""
        if full_message is None:
            if domain_data is None or message_types is None or message_data is None:
                raise ValueError(
                    "pass full_message, or domain_data, message_types and message_data"
                )
            primary = _primary_type(message_types)
            types = {"EIP712Domain": _domain_types(domain_data), **message_types}
            full_message = {
                "types": types,
                "primaryType": primary,
                "domain": domain_data,
                "message": message_data,
            }
        reply = self._call(
            self._stub.SignTypedData,
            pb.SignTypedDataRequest(
                key_id=self._key_id, typed_data_json=json.dumps(full_message, default=_json_bytes)
            ),
        )
        return _signed_message(reply.signature, reply.digest)

    def unsafe_sign_hash(self, message_hash: Hash32) -> SignedMessage:
        raise NotImplementedError(
            "wallet-signer never signs a bare hash: it could be any transaction. "
            "Use sign_transaction, sign_message or sign_typed_data."
        )

    def __repr__(self) -> str:
        return f"RemoteAccount(key_id={self._key_id!r}, address={self._address})"


def _signed_transaction(reply: pb.SignTransactionResponse) -> SignedTransaction:
    return SignedTransaction(
        raw_transaction=HexBytes(reply.raw_transaction),
        hash=HexBytes(reply.transaction_hash),
        r=int.from_bytes(reply.signature.r, "big"),
        s=int.from_bytes(reply.signature.s, "big"),
        v=reply.signature.v,
    )


def transaction_to_proto(tx: Mapping[str, Any]) -> pb.Transaction:
    """An eth-account / web3.py transaction dict as a structured `Transaction` message."""
    unknown = set(tx) - _KNOWN_TX_KEYS
    if unknown:
        raise ValueError(f"unsupported transaction fields: {sorted(unknown)}")
    tx_type = _int(tx["type"]) if "type" in tx else _infer_type(tx)
    msg = pb.Transaction(
        type=tx_type,
        chain_id=_int(tx.get("chainId", 0)),
        nonce=_int(tx.get("nonce", 0)),
        to=_address(tx.get("to")),
        value=str(_int(tx.get("value", 0))),
        gas_limit=_int(tx.get("gas", 0)),
        data=_bytes(tx.get("data", b"")),
    )
    for name, field in (
        ("gasPrice", "gas_price"),
        ("maxFeePerGas", "max_fee_per_gas"),
        ("maxPriorityFeePerGas", "max_priority_fee_per_gas"),
        ("maxFeePerBlobGas", "max_fee_per_blob_gas"),
    ):
        if name in tx:
            setattr(msg, field, str(_int(tx[name])))
    msg.blob_versioned_hashes.extend(_bytes(h) for h in tx.get("blobVersionedHashes", ()))
    for entry in tx.get("accessList", ()):
        msg.access_list.add(
            address=_address(entry["address"]),
            storage_keys=[_bytes(k) for k in entry.get("storageKeys", ())],
        )
    for auth in tx.get("authorizationList", ()):
        item = auth.model_dump(by_alias=True) if hasattr(auth, "model_dump") else auth
        msg.authorization_list.add(
            chain_id=_int(item["chainId"]),
            address=_address(item["address"]),
            nonce=_int(item["nonce"]),
            y_parity=_int(item["yParity"]),
            r=_int(item["r"]).to_bytes(32, "big"),
            s=_int(item["s"]).to_bytes(32, "big"),
        )
    return msg


_KNOWN_TX_KEYS = frozenset(
    {
        "type",
        "chainId",
        "nonce",
        "to",
        "value",
        "gas",
        "gasPrice",
        "maxFeePerGas",
        "maxPriorityFeePerGas",
        "data",
        "accessList",
        "authorizationList",
        "maxFeePerBlobGas",
        "blobVersionedHashes",
        "from",
    }
)


def _infer_type(tx: Mapping[str, Any]) -> int:
    if "authorizationList" in tx:
        return 4
    if "blobVersionedHashes" in tx or "maxFeePerBlobGas" in tx:
        return 3
    if "maxFeePerGas" in tx or "maxPriorityFeePerGas" in tx:
        return 2
    if "accessList" in tx:
        return 1
    return 0


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError("expected an integer, got a bool")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return int(value, 16) if value.lower().startswith("0x") else int(value)
    if isinstance(value, bytes):
        return int.from_bytes(value, "big")
    raise TypeError(f"expected an integer, got {type(value).__name__}")


def _bytes(value: Any) -> bytes:
    if isinstance(value, str):
        return bytes(HexBytes(value))
    return bytes(value)


def _address(value: Any) -> str:
    if value is None or value in ("", b""):
        return ""
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return str(value)


def _json_bytes(value: Any) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _signed_message(signature: bytes, digest: bytes) -> SignedMessage:
    return SignedMessage(
        message_hash=HexBytes(digest),
        r=int.from_bytes(signature[:32], "big"),
        s=int.from_bytes(signature[32:64], "big"),
        v=signature[64],
        signature=HexBytes(signature),
    )


_DOMAIN_FIELD_TYPES = {
    "name": "string",
    "version": "string",
    "chainId": "uint256",
    "verifyingContract": "address",
    "salt": "bytes32",
}


def _domain_types(domain: Mapping[str, Any]) -> list[dict[str, str]]:
    return [{"name": k, "type": t} for k, t in _DOMAIN_FIELD_TYPES.items() if k in domain]


def _primary_type(types: Mapping[str, Any]) -> str:
    """The type no other type refers to, as eth-account infers it."""
    referenced = {
        core
        for name, fields in types.items()
        for field in fields
        if (core := field["type"].split("[")[0]) != name  # a recursive type may be primary
    }
    roots = [name for name in types if name not in referenced]
    if len(roots) != 1:
        raise ValueError(f"cannot infer the primary type from {sorted(types)}; pass full_message")
    return roots[0]


def _register_with_web3() -> None:
    try:
        from web3.middleware.signing import to_account
    except ImportError:
        return
    to_account.register(RemoteAccount, lambda account: account)


_register_with_web3()
