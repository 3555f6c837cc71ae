"""Bench only, a measurement aid for the serving-model choice (README, Performance): the same
application path behind `grpc.aio` + uvloop, the blocking application call (durable audit,
PKCS#11, KMS) pushed to a bounded thread pool with `run_in_executor`, as an aio server would
have to. Not a serving mode: no interceptor (request id, access log, error mapping), which
flatters it. `python -m bench.aio_prototype serve --config FILE` (BENCH_AUDIT=0: audit off; needs
`pip install uvloop`).
"""

import asyncio
import logging
import os
import sys
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc


async def _serve(config_path: Path, audit: bool) -> None:
    from bench.bench_access import NoAudit
    from signer.app.access import AccessControl
    from signer.app.application import Application
    from signer.cli import load_config
    from signer.grpc.servicer import SignerServicer
    from signer.service import KeyRing
    from signer.store import open_store
    from signer.v1 import signer_pb2 as pb

    config = load_config(config_path)
    store = open_store(config.store.url)
    store.migrate()
    app = Application(KeyRing.from_config(config), store, access=AccessControl({}),
                      audit=None if audit else NoAudit())  # type: ignore[arg-type]
    app.audit.start()
    app.keyring.self_test()
    servicer = SignerServicer(app)
    pool = ThreadPoolExecutor(config.server.max_workers, thread_name_prefix="app")
    loop = asyncio.get_running_loop()

    async def sign(request: Any, context: Any) -> Any:
        return await loop.run_in_executor(pool, servicer.SignTransaction, request, context)

    async def sign_many(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        index = 0
        async for request in requests:
            signed = await loop.run_in_executor(pool, servicer.SignTransaction, request, context)
            yield pb.SignTransactionsResponse(index=index, signed=signed)
            index += 1

    handlers = {
        "SignTransaction": grpc.unary_unary_rpc_method_handler(
            sign, request_deserializer=pb.SignTransactionRequest.FromString,
            response_serializer=pb.SignTransactionResponse.SerializeToString),
        "SignTransactions": grpc.stream_stream_rpc_method_handler(
            sign_many, request_deserializer=pb.SignTransactionRequest.FromString,
            response_serializer=pb.SignTransactionsResponse.SerializeToString),
    }
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("signer.v1.SignerService", handlers),))
    port = server.add_insecure_port(config.server.listen)
    await server.start()
    logging.getLogger("signer.grpc.server").info("listening on %s (port %d)",
                                                 config.server.listen, port)
    logging.getLogger("signer.grpc.server").info("SERVING")
    await server.wait_for_termination()


def main(argv: list[str]) -> None:
    import uvloop

    assert argv[:2] == ["serve", "--config"], argv
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    uvloop.install()
    asyncio.run(_serve(Path(argv[2]), audit=os.environ.get("BENCH_AUDIT", "1") == "1"))


if __name__ == "__main__":
    main(sys.argv[1:])
