"""SignerService handlers: proto in, key ring, proto out. Errors are mapped by the interceptor."""

import grpc

from signer.grpc import convert
from signer.service import KeyRing
from signer.v1 import signer_pb2 as pb
from signer.v1 import signer_pb2_grpc as pb_grpc


class SignerServicer(pb_grpc.SignerServiceServicer):  # type: ignore[misc]
    def __init__(self, keyring: KeyRing) -> None:
        self._keys = keyring

    def ListKeys(
        self, request: pb.ListKeysRequest, context: grpc.ServicerContext
    ) -> pb.ListKeysResponse:
        return pb.ListKeysResponse(keys=[convert.key_info(s) for s in self._keys])

    def GetAddress(
        self, request: pb.GetAddressRequest, context: grpc.ServicerContext
    ) -> pb.GetAddressResponse:
        signer = self._keys.get(request.key_id)
        return pb.GetAddressResponse(
            key_id=signer.key_id, address=signer.address, public_key=signer.public_key
        )

    def SignTransaction(
        self, request: pb.SignTransactionRequest, context: grpc.ServicerContext
    ) -> pb.SignTransactionResponse:
        signer = self._keys.get(request.key_id)
        tx = convert.transaction_from_request(request)
        signed = signer.sign_transaction(tx, _remaining(context))
        return convert.sign_transaction_response(signer, signed)

    def SignMessage(
        self, request: pb.SignMessageRequest, context: grpc.ServicerContext
    ) -> pb.SignMessageResponse:
        signer = self._keys.get(request.key_id)
        signed = signer.sign_message(request.message, _remaining(context))
        return pb.SignMessageResponse(**convert.signed_digest_fields(signed))

    def SignTypedData(
        self, request: pb.SignTypedDataRequest, context: grpc.ServicerContext
    ) -> pb.SignTypedDataResponse:
        signer = self._keys.get(request.key_id)
        signed = signer.sign_typed_data(request.typed_data_json, _remaining(context))
        return pb.SignTypedDataResponse(**convert.signed_digest_fields(signed))


# grpc reports "no deadline" as a remaining time of ~9.2e18 s; backends take None for that.
_NO_DEADLINE_ABOVE = 24 * 3600.0


def _remaining(context: grpc.ServicerContext) -> float | None:
    """The caller's remaining deadline in seconds, or None when it set none."""
    remaining = context.time_remaining()
    return None if remaining is None or remaining > _NO_DEADLINE_ABOVE else remaining
