"""Shared state behind one interface: SQLite embedded, PostgreSQL for several replicas."""

from signer.store.sql import AuditRow, FrozenKey, Store, open_store

__all__ = ["AuditRow", "FrozenKey", "Store", "open_store"]
