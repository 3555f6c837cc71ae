"""Where the application path sends its audit records: the durable hash-chained `AuditLog`
(signer/app/audit.py) in service, or any other sink with the same two calls (a benchmark's
no-audit stand-in) without a `type: ignore`."""

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

from signer.store import AuditRow, BudgetUse

if TYPE_CHECKING:
    from signer.app.audit import Record, Reservation
    from signer.store.sql import Batch


class AuditSink(Protocol):
    """What `Application` needs of an audit log: begin a chain, and write records durably
    with the budget operations that belong to them (see `AuditLog.write`)."""

    @property
    def writer(self) -> str: ...

    def start(self) -> None: ...

    def write(
        self,
        bodies: "Iterable[Record]",
        timeout: float | None = None,
        *,
        reserve: "Reservation | None" = None,
        settle: str | None = None,
        release: str | None = None,
        durable: bool = True,
        also: "Callable[[Batch, list[AuditRow]], None] | None" = None,
    ) -> list[BudgetUse]: ...
