"""SignTransactions streams cannot hold the server's workers: a stranger's stream is refused
when it opens, a client holds at most `server.max_streams_per_client` streams, and a stream
idle past `server.stream_idle_seconds` is cancelled. Against a real `wallet-signer serve` with
mTLS (certificates made here); each test failed on the code before the fix, where four idle
streams from a CA-issued certificate naming no client blocked every worker (max_workers = 4)."""

import queue
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from signer.client import TlsFiles, open_channel
from signer.v1 import signer_pb2 as pb
from signer.v1 import signer_pb2_grpc as pb_grpc
from tests.support.serve_process import ServeProcess, start_serve
from tests.support.tls_certs import CertificateAuthority


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory):
    ca = CertificateAuthority(tmp_path_factory.mktemp("pki"))
    return {
        "ca": ca,
        "server": ca.server(),
        "trader": ca.issue("trader", uris=("spiffe://prod/agents/trader",)),
        "stranger": ca.issue("stranger", uris=("spiffe://prod/agents/stranger",)),
    }


@pytest.fixture
def served(pki, tmp_path: Path, env_key: str) -> Iterator[ServeProcess]:
    config = tmp_path / "signer.toml"
    server = pki["server"]
    config.write_text(
        f'[server]\nlisten = "127.0.0.1:0"\ntls_cert_file = "{server.cert_file}"\n'
        f'tls_key_file = "{server.key_file}"\nclient_ca_file = "{pki["ca"].cert_file}"\n'
        "max_workers = 4\nstream_idle_seconds = 1.5\n"
        f'[store]\nurl = "sqlite://{tmp_path / "state.db"}"\n'
        '[keys.hot]\nbackend = "env"\nprivate_key_env = "HOT_WALLET_KEY"\n'
        '[clients.trader]\nidentity = "spiffe://prod/agents/trader"\nkeys = ["hot"]\n'
    )
    running = start_serve(tmp_path, config, {"HOT_WALLET_KEY": env_key})
    yield running
    running.proc.kill()
    running.proc.wait(10)


def stub_for(pki, served: ServeProcess, who: str) -> pb_grpc.SignerServiceStub:
    issued = pki[who]
    return pb_grpc.SignerServiceStub(open_channel(
        served.target, TlsFiles(pki["ca"].cert_pem, issued.cert_pem, issued.key_pem)))


def held_open(stub: pb_grpc.SignerServiceStub, timeout: float = 30) -> tuple[object, queue.Queue]:
    """A SignTransactions stream that sends nothing until something is put in its queue."""
    outbox: queue.Queue = queue.Queue()

    def requests():
        while (item := outbox.get(timeout=timeout)) is not None:
            yield item

    return stub.SignTransactions(requests(), timeout=timeout), outbox


def test_a_strangers_stream_is_refused_when_it_opens(pki, served):
    streams = [held_open(stub_for(pki, served, "stranger")) for _ in range(4)]
    for call, outbox in streams:
        with pytest.raises(grpc.RpcError) as caught:
            next(call)  # nothing was sent: refused on opening, not after a message
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        outbox.put(None)
    trader = stub_for(pki, served, "trader")
    assert trader.GetAddress(pb.GetAddressRequest(key_id="hot"), timeout=5).address


def test_one_client_cannot_hold_every_worker(pki, served):
    trader = stub_for(pki, served, "trader")
    _first, first_box = held_open(trader)
    time.sleep(0.2)  # the first stream is open and holding its slot
    second, second_box = held_open(trader)
    try:
        with pytest.raises(grpc.RpcError) as caught:
            next(second)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "server.max_streams_per_client" in caught.value.details()
        assert trader.GetAddress(pb.GetAddressRequest(key_id="hot"), timeout=5).address
    finally:
        first_box.put(None)
        second_box.put(None)


def test_an_idle_stream_is_cancelled_and_its_worker_freed(pki, served):
    trader = stub_for(pki, served, "trader")
    call, outbox = held_open(trader)
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as caught:
        next(call)
    assert caught.value.code() == grpc.StatusCode.CANCELLED
    assert time.monotonic() - started < 20  # 1.5 s idle limit, swept every 0.375 s
    outbox.put(None)
    # the slot is free again: a new stream from the same client is served
    again, again_box = held_open(trader)
    again_box.put(pb.SignTransactionRequest(key_id="hot", transaction=pb.Transaction(
        type=2, chain_id=1, to="0x" + "42" * 20, gas_limit=21000, max_fee_per_gas="10",
        max_priority_fee_per_gas="1")))
    reply = next(again)
    assert reply.index == 0 and reply.signed.raw_transaction
    again_box.put(None)
    assert "idle for over 1.5s" in served.log()
