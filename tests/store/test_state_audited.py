"""Freeze, unfreeze and reloads change state only together with their audit record (issue 16):
when the audit record cannot be written, the state does not change. The audit write is made to
fail inside the real database (a trigger that refuses inserts into audit_log), on SQLite and
PostgreSQL."""

from pathlib import Path

import pytest

from signer import config as config_module
from signer.admin.state import freeze_key, frozen_keys, unfreeze_key
from signer.app.audit import verify
from signer.errors import StoreUnavailable
from signer.service import KeyRing
from signer.store import Store, open_store
from tests.conftest import env_wallet, open_app

_REFUSE = {
    "sqlite": ("CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log "
               "BEGIN SELECT RAISE(ABORT, 'audit insert refused'); END",),
    "postgresql": (
        "CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'audit insert refused'; END $$",
        "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log "
        "FOR EACH ROW EXECUTE FUNCTION refuse_audit()",
    ),
}
_ALLOW = {
    "sqlite": ("DROP TRIGGER refuse_audit",),
    "postgresql": ("DROP TRIGGER refuse_audit ON audit_log", "DROP FUNCTION refuse_audit()"),
}


def _execute(store: Store, statements: tuple[str, ...]) -> None:
    with store._transaction() as tx:
        for statement in statements:
            tx.execute(statement)


def _config(tmp_path: Path, url: str, clients: str = "") -> Path:
    path = tmp_path / "signer.toml"
    path.write_text(f'[store]\nurl = "{url}"\n'
                    '[keys.hot]\nbackend = "env"\nprivate_key_env = "HOT_WALLET_KEY"\n'
                    + clients)
    return path


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_no_freeze_or_unfreeze_stands_without_its_audit_record(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
):
    url: str = request.getfixturevalue(f"{kind}_store_url")
    config = config_module.load(_config(tmp_path, url))
    store = open_store(url)
    try:
        store.migrate()
        _execute(store, _REFUSE[store.kind])
        with pytest.raises(StoreUnavailable):
            freeze_key(config, "hot", "incident 7")
        assert frozen_keys(config) == {}  # the freeze did not happen
        _execute(store, _ALLOW[store.kind])

        freeze_key(config, "hot", "incident 7")
        assert set(frozen_keys(config)) == {"hot"}
        _execute(store, _REFUSE[store.kind])
        with pytest.raises(StoreUnavailable):
            unfreeze_key(config, "hot")
        assert set(frozen_keys(config)) == {"hot"}  # still frozen: the thaw did not happen
        _execute(store, _ALLOW[store.kind])

        assert unfreeze_key(config, "hot") is True
        assert frozen_keys(config) == {}
        report = verify(store)
        assert report.ok
        actions = [(r.body, r.writer) for w in store.writers() for r in store.audit_rows(w)
                   if '"kind":"admin"' in r.body]
        assert [body.split('"action":"')[1].split('"')[0] for body, _ in actions] == [
            "freeze", "unfreeze"]
    finally:
        store.close()


def test_a_reload_whose_audit_record_cannot_be_written_keeps_the_old_clients(
    store: Store, tmp_path: Path, env_key: str
):
    app = open_app(KeyRing([env_wallet(env_key)]), store=store)
    try:
        before = app.access
        path = _config(tmp_path, "sqlite:///unused.db")  # reload reads clients and policies only
        _execute(store, _REFUSE[store.kind])
        assert app.reload_from(path) is False
        assert app.access is before
        _execute(store, _ALLOW[store.kind])
        assert app.reload_from(path) is True
        assert app.access is not before
        assert verify(store).ok
    finally:
        app.close()
