"""SignerService handlers: proto in, the application path, proto out.

Errors are mapped by the interceptor; who the caller is comes from the TLS handshake (the
client certificate grpc verified) and the interceptor's request id.
"""

from collections.abc import Callable, Iterator
from dataclasses import replace

import grpc

from signer.app.application import Application
from signer.app.caller import Caller
from signer.errors import FailedPrecondition, InvalidRequest
from signer.eth import messages
from signer.grpc import convert
from signer.grpc.interceptors import (
    Refusal,
    answer_each,
    current_call,
    message_request_id,
)
from signer.grpc.streams import StreamGuard
from signer.v1 import signer_pb2 as pb
from signer.v1 import signer_pb2_grpc as pb_grpc


class SignerServicer(pb_grpc.SignerServiceServicer):  # type: ignore[misc]
    def __init__(
        self,
        app: Application,
        streams: StreamGuard,
        reload: Callable[[str], bool] | None = None,
    ) -> None:
        self._app = app
        self._streams = streams
        self._reload = reload  # the server's reload (what SIGHUP runs), by whom

    def Reload(
        self, request: pb.ReloadRequest, context: grpc.ServicerContext
    ) -> pb.ReloadResponse:
        operator = self._app.authorize_reload(caller_of(context))
        if self._reload is None:
            raise FailedPrecondition("this server has no config file to re-read")
        reloaded = self._reload(operator)
        return convert.reload_response(self._app.last_reload, reloaded)

    def ListKeys(
        self, request: pb.ListKeysRequest, context: grpc.ServicerContext
    ) -> pb.ListKeysResponse:
        keys = self._app.list_keys(caller_of(context))
        return pb.ListKeysResponse(
            keys=[convert.key_info(k.signer, k.frozen, k.versions) for k in keys])

    def GetAddress(
        self, request: pb.GetAddressRequest, context: grpc.ServicerContext
    ) -> pb.GetAddressResponse:
        signer = self._app.get_key(caller_of(context), request.key_id)
        return pb.GetAddressResponse(
            key_id=signer.key_id, address=signer.address, public_key=signer.public_key
        )

    def SignTransaction(
        self, request: pb.SignTransactionRequest, context: grpc.ServicerContext
    ) -> pb.SignTransactionResponse:
        return self._sign_transaction(caller_of(context), request, context)

    def SignTransactions(
        self, requests: Iterator[pb.SignTransactionRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.SignTransactionsResponse]:
        stream = caller_of(context)  # peer and certificate once; each message its own id
        # who is asking, and may it sign transactions at all: answered when the stream opens,
        # not when (if ever) its first message comes
        client = self._app.open_stream(stream, "SignTransaction")

        def sign(index: int, request: pb.SignTransactionRequest) -> pb.SignTransactionResponse:
            caller = replace(stream, request_id=message_request_id(stream.request_id, index))
            return self._sign_transaction(caller, request, context)

        with self._streams.hold(client, requests, context):
            for index, outcome in answer_each(requests, sign):
                if isinstance(outcome, Refusal):
                    error = pb.Status(code=outcome.code.value[0], message=outcome.message)
                    yield pb.SignTransactionsResponse(index=index, error=error)
                else:
                    yield pb.SignTransactionsResponse(index=index, signed=outcome)

    def _sign_transaction(
        self, caller: Caller, request: pb.SignTransactionRequest, context: grpc.ServicerContext
    ) -> pb.SignTransactionResponse:
        """The one path for a transaction, unary or streamed."""
        with self._app.signing(caller, "SignTransaction", request.key_id) as signing:
            tx = convert.transaction_from_request(request)
            signed = signing.sign_transaction(tx, _remaining(context))
        return convert.sign_transaction_response(signing.signer, signed)

    def SignMessage(
        self, request: pb.SignMessageRequest, context: grpc.ServicerContext
    ) -> pb.SignMessageResponse:
        with self._app.signing(caller_of(context), "SignMessage", request.key_id) as signing:
            signed = signing.sign_message(request.message, _remaining(context))
        return pb.SignMessageResponse(**convert.signed_digest_fields(signed))

    def SignTypedData(
        self, request: pb.SignTypedDataRequest, context: grpc.ServicerContext
    ) -> pb.SignTypedDataResponse:
        with self._app.signing(caller_of(context), "SignTypedData", request.key_id) as signing:
            signed = signing.sign_typed_data(request.typed_data_json, _remaining(context))
        return pb.SignTypedDataResponse(**convert.signed_digest_fields(signed))

    def SignAuthorization(
        self, request: pb.SignAuthorizationRequest, context: grpc.ServicerContext
    ) -> pb.SignAuthorizationResponse:
        with self._app.signing(caller_of(context), "SignAuthorization", request.key_id) as signing:
            auth = convert.authorization_from_request(request)
            signed = signing.sign_authorization(auth, _remaining(context))
        return convert.authorization_response(signed)

    def EvaluatePolicy(
        self, request: pb.EvaluatePolicyRequest, context: grpc.ServicerContext
    ) -> pb.EvaluatePolicyResponse:
        which = request.WhichOneof("request")
        caller = caller_of(context)
        if which == "transaction":
            inner = request.transaction
            evaluation = self._app.evaluate(
                caller, "SignTransaction", inner.key_id,
                lambda: convert.transaction_from_request(inner),
            )
        elif which == "message":
            message = request.message
            evaluation = self._app.evaluate(
                caller, "SignMessage", message.key_id, lambda: bytes(message.message)
            )
        elif which == "typed_data":
            typed = request.typed_data
            evaluation = self._app.evaluate(
                caller, "SignTypedData", typed.key_id,
                lambda: messages.load_typed_data(typed.typed_data_json),
            )
        elif which == "authorization":
            auth = request.authorization
            evaluation = self._app.evaluate(
                caller, "SignAuthorization", auth.key_id,
                lambda: convert.authorization_from_request(auth),
            )
        else:
            raise InvalidRequest(
                "request: set one of transaction, message, typed_data or authorization"
            )
        return convert.evaluation_response(evaluation)


def caller_of(context: grpc.ServicerContext) -> Caller:
    """The caller as the application sees it: peer, request id, verified client certificate."""
    certificates = context.auth_context().get("x509_pem_cert")
    request_id, peer = current_call()
    return Caller(
        peer=peer or context.peer(),
        request_id=request_id,
        certificate_pem=bytes(certificates[0]) if certificates else None,
    )


# grpc reports "no deadline" as a remaining time of ~9.2e18 s; backends take None for that.
_NO_DEADLINE_ABOVE = 24 * 3600.0


def _remaining(context: grpc.ServicerContext) -> float | None:
    """The caller's remaining deadline in seconds, or None when it set none."""
    remaining = context.time_remaining()
    return None if remaining is None or remaining > _NO_DEADLINE_ABOVE else remaining
