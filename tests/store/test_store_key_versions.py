"""Key versions in each store kind: version 1 recorded alone (rotate pins it before writing a
secret's next version), then a rotation on top of it."""

from signer.store import KeyVersionRow

SOURCE = '{"backend": "vault", "path": "agents/a", "url": "http://127.0.0.1:1", "version": 3}'


def test_first_version_is_recorded_once_and_rotated_from(store):  # type: ignore[no-untyped-def]
    first = KeyVersionRow("hot", 1, "0x" + "11" * 20, "active", SOURCE, "", "2026-01-01T00:00:00Z")
    assert store.record_first_version(first) == first
    other = KeyVersionRow("hot", 1, "0x" + "22" * 20, "active", "", "", "2026-01-02T00:00:00Z")
    assert store.record_first_version(other) == first  # the stored one stands
    assert store.key_versions() == [first]
    new = KeyVersionRow("hot", 2, "0x" + "33" * 20, "active", "{}", "", "2026-01-03T00:00:00Z")
    previous = store.rotate_key(other, new)  # `other` is ignored: version 1 exists
    assert (previous.version, previous.address) == (1, first.address)
    assert [(r.version, r.address, r.state, r.source) for r in store.key_versions()] == [
        (1, first.address, "draining", SOURCE), (2, new.address, "active", "{}")]
