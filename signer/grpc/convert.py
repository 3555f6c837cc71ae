"""Proto messages to domain objects and back; every check names the offending field."""

from collections.abc import Sequence

from signer.app.application import Evaluation
from signer.errors import InvalidRequest
from signer.eth import transactions as txs
from signer.eth.fields import (
    checksum,
    parse_address,
    parse_uint256_bytes,
    parse_uint256_decimal,
)
from signer.service import KeyChanges
from signer.store import FrozenKey, KeyVersionRow
from signer.v1 import signer_pb2 as pb
from signer.wallet import SignedDigest, SignedTransaction, WalletSigner


def transaction_from_proto(msg: pb.Transaction) -> txs.UnsignedTransaction:
    txs.check_type(msg.type)
    present = {
        "gas_price": msg.gas_price != "",
        "max_fee_per_gas": msg.max_fee_per_gas != "",
        "max_priority_fee_per_gas": msg.max_priority_fee_per_gas != "",
        "access_list": len(msg.access_list) > 0,
        "authorization_list": len(msg.authorization_list) > 0,
        "max_fee_per_blob_gas": msg.max_fee_per_blob_gas != "",
        "blob_versioned_hashes": len(msg.blob_versioned_hashes) > 0,
    }
    for name in sorted(txs.OPTIONAL_FIELDS - txs.TYPE_FIELDS[msg.type]):
        if present[name]:
            raise InvalidRequest(f"{name}: not a field of type {msg.type} transactions")
    return txs.UnsignedTransaction(
        type=msg.type,
        chain_id=msg.chain_id,
        nonce=msg.nonce,
        to=parse_address(msg.to, "to") if msg.to else b"",
        value=parse_uint256_decimal(msg.value, "value"),
        gas_limit=msg.gas_limit,
        data=msg.data,
        gas_price=parse_uint256_decimal(msg.gas_price, "gas_price"),
        max_fee_per_gas=parse_uint256_decimal(msg.max_fee_per_gas, "max_fee_per_gas"),
        max_priority_fee_per_gas=parse_uint256_decimal(
            msg.max_priority_fee_per_gas, "max_priority_fee_per_gas"
        ),
        access_list=tuple(
            txs.AccessListEntry(
                parse_address(entry.address, f"access_list[{i}].address"),
                tuple(entry.storage_keys),
            )
            for i, entry in enumerate(msg.access_list)
        ),
        authorization_list=tuple(
            txs.Authorization(
                chain_id=auth.chain_id,
                address=parse_address(auth.address, f"authorization_list[{i}].address"),
                nonce=auth.nonce,
                y_parity=auth.y_parity,
                r=parse_uint256_bytes(auth.r, f"authorization_list[{i}].r"),
                s=parse_uint256_bytes(auth.s, f"authorization_list[{i}].s"),
            )
            for i, auth in enumerate(msg.authorization_list)
        ),
        max_fee_per_blob_gas=parse_uint256_decimal(
            msg.max_fee_per_blob_gas, "max_fee_per_blob_gas"
        ),
        blob_versioned_hashes=tuple(msg.blob_versioned_hashes),
    )


def transaction_from_request(request: pb.SignTransactionRequest) -> txs.UnsignedTransaction:
    payload = request.WhichOneof("payload")
    if payload == "transaction":
        return transaction_from_proto(request.transaction)
    if payload == "unsigned_transaction":
        return txs.decode_unsigned(request.unsigned_transaction)
    raise InvalidRequest("payload: set either transaction or unsigned_transaction")


def authorization_from_request(
    request: pb.SignAuthorizationRequest,
) -> txs.UnsignedAuthorization:
    return txs.UnsignedAuthorization(
        chain_id=request.chain_id,
        address=parse_address(request.address, "address"),
        nonce=request.nonce,
    )


def authorization_response(signed: txs.Authorization) -> pb.SignAuthorizationResponse:
    return pb.SignAuthorizationResponse(
        authorization=pb.Authorization(
            chain_id=signed.chain_id,
            address=checksum(signed.address),
            nonce=signed.nonce,
            y_parity=signed.y_parity,
            r=signed.r.to_bytes(32, "big"),
            s=signed.s.to_bytes(32, "big"),
        )
    )


def key_info(
    signer: WalletSigner,
    frozen: FrozenKey | None = None,
    versions: Sequence[KeyVersionRow] = (),
) -> pb.KeyInfo:
    return pb.KeyInfo(
        key_id=signer.key_id,
        address=signer.address,
        backend=signer.backend_name,
        public_key=signer.public_key,
        frozen=frozen is not None,
        frozen_reason=frozen.reason if frozen else "",
        versions=[
            pb.KeyVersion(version=v.version, address=v.address, state=v.state,
                          changed_at=v.changed_at, reason=v.reason)
            for v in versions
        ],
    )


def reload_response(changes: KeyChanges | None, reloaded: bool) -> pb.ReloadResponse:
    if changes is None or not reloaded:
        return pb.ReloadResponse(reloaded=reloaded)
    return pb.ReloadResponse(
        reloaded=True,
        added=[k for k, _ in changes.added],
        changed=[k for k, _, _ in changes.changed],
        removed=[k for k, _ in changes.removed],
        failed=[pb.ReloadFailure(key_id=k, reason=r) for k, r in changes.failed],
    )


def sign_transaction_response(
    signer: WalletSigner, signed: SignedTransaction
) -> pb.SignTransactionResponse:
    return pb.SignTransactionResponse(
        raw_transaction=signed.raw_transaction,
        transaction_hash=signed.transaction_hash,
        sender=signer.address,
        signature=pb.Signature(
            r=signed.r.to_bytes(32, "big"), s=signed.s.to_bytes(32, "big"), v=signed.v
        ),
    )


def signed_digest_fields(signed: SignedDigest) -> dict[str, bytes]:
    return {"signature": signed.signature, "digest": signed.digest}


def evaluation_response(evaluation: Evaluation) -> pb.EvaluatePolicyResponse:
    return pb.EvaluatePolicyResponse(
        allowed=evaluation.allowed,
        rule_id=evaluation.rule_id or "",
        reason=evaluation.reason,
        policy=evaluation.policy or "",
        budgets=[
            pb.BudgetStatus(
                name=b.name, spent=str(b.spent), limit=str(b.limit),
                window_seconds=b.window_seconds, request_spends=str(b.request_spends),
            )
            for b in evaluation.budgets
        ],
    )
