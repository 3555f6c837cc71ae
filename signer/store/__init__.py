"""Shared state behind one interface: SQLite embedded, PostgreSQL for several replicas."""

from signer.store.sql import (
    AuditRow,
    BudgetClaim,
    BudgetExceeded,
    BudgetUse,
    FrozenKey,
    KeyVersionRow,
    Store,
    VersionConflict,
    open_store,
)

__all__ = [
    "AuditRow",
    "BudgetClaim",
    "BudgetExceeded",
    "BudgetUse",
    "FrozenKey",
    "KeyVersionRow",
    "Store",
    "VersionConflict",
    "open_store",
]
