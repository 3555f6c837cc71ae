"""PostgreSQL: an audit group commit, with its records and every budget operation it carries
(reserve, settle, release), is one round trip to the database. Counted on the wire: the store
talks to the real server through a loopback TCP relay that counts how often the client had to
wait for an answer before it could send again."""

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from signer.app.audit import AuditLog, Reservation
from signer.app.records import Signing
from signer.store import BudgetClaim, BudgetExceeded, open_store
from signer.store.sql import Store

DAY = 86400


class Relay:
    """127.0.0.1:port -> the database; `turns` counts client sends that follow an answer."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.turns = 0
        self._answered = True  # the client's first send starts a round trip
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target, timeout=10)
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        while data := _recv(source):
            with self._lock:
                if from_client and self._answered:
                    self.turns += 1
                self._answered = not from_client
            sink.sendall(data)
        sink.close()

    def close(self) -> None:
        self.listener.close()


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


@contextmanager
def relayed(url: str) -> Iterator[tuple[Store, Relay]]:
    host, port = url.split("@", 1)[1].split("/", 1)[0].rsplit(":", 1)
    relay = Relay((host, int(port)))
    store = open_store(url.replace(f"{host}:{port}", f"127.0.0.1:{relay.port}"))
    try:
        yield store, relay
    finally:
        store.close()
        relay.close()


def record(kind: str, event: str) -> Signing:
    return Signing(kind=kind, event=event, request_id=event, peer="p", method="SignMessage",  # type: ignore[arg-type]
                   key_id="hot")


@pytest.fixture
def postgres(postgres_db) -> Iterator[tuple[Store, Relay]]:  # type: ignore[no-untyped-def]
    setup = open_store(postgres_db.url)
    setup.migrate()
    setup.close()
    with relayed(postgres_db.url) as pair:
        yield pair


def test_a_group_commit_with_budgets_is_one_round_trip(postgres):  # type: ignore[no-untyped-def]
    store, relay = postgres
    log = AuditLog(store)
    log.start()  # the chain's first commit reads heads first: not the steady state
    claim = BudgetClaim("trader/eth", 10, 30, DAY)
    log.write([record("intent", "a")], reserve=Reservation("a", [claim], 1000.0), durable=False)
    log.write([record("intent", "b")], reserve=Reservation("b", [claim], 1001.0), durable=False)

    for commit in (
        # the intent of a request that spends two budgets
        lambda: log.write([record("intent", "c")], durable=False, reserve=Reservation(
            "c", [BudgetClaim("trader/n", 1, 5, DAY), claim], 1002.0)),
        # outcomes: one signed (settle), one not (release)
        lambda: log.write([record("outcome", "a")], settle="a"),
        lambda: log.write([record("outcome", "b")], release="b"),
    ):
        before = relay.turns
        commit()
        assert relay.turns - before == 1

    # a reservation that does not fit is decided in the same round trip (read after COMMIT)
    before = relay.turns
    with pytest.raises(BudgetExceeded):
        log.write([record("intent", "d")], durable=False,
                  reserve=Reservation("d", [BudgetClaim("trader/eth", 20, 30, DAY)], 1003.0))
    assert relay.turns - before == 1
    assert store.budget_spent("trader/eth", DAY, 1004.0) == 20  # a (settled) + c; b released
