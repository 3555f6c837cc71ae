"""Keep the audit log's size bounded without losing its proof: export the records older than a
date to a JSON-lines file, then prune exactly what that file holds, leaving a checkpoint record
(in the pruning command's own hash chain, witnessed by every chain that starts after it) from
which `verify` proves the rest.

Export file, one JSON object per line:

    {"export": "wallet-signer audit", "version": 1, "before": B, "from": {writer: [seq, hash]}}
    {"writer": W, "seq": N, "at": ..., "body": "<the record's canonical JSON>", "prev_hash": ...,
     "hash": ...}                                          one line per record, chain by chain
    {"heads": {writer: [seq, hash]}, "records": COUNT}     the chain heads at the cut

`from` is where the export starts (the previous prune's heads, or nothing); the rows are the
stored rows unchanged, so anyone can re-check their hashes with `record_hash`. Each chain is cut
at its last record older than B, keeping at least the chain's last record.
"""

import hashlib
import json
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from signer.app.audit import GENESIS, AuditLog, record_hash
from signer.app.records import Checkpoint, parse
from signer.config import Config
from signer.errors import FailedPrecondition, InvalidRequest
from signer.store import AuditRow, Store
from signer.store.sql import BUDGET_RETENTION_SECONDS, Batch

FORMAT = "wallet-signer audit"
VERSION = 1
Heads = dict[str, tuple[int, str]]


def parse_before(text: str) -> str:
    """--before DATE (ISO 8601 date or time; UTC unless it says otherwise) as a record `at`."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(
            f"--before: {text!r} is not an ISO 8601 date or time (e.g. 2026-01-31 or "
            "2026-01-31T12:00:00+00:00)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _start_heads(store: Store) -> Heads:
    """Where each chain starts now: the latest prune checkpoint's heads."""
    pointer = store.latest_checkpoint()
    if pointer is None:
        return {}
    row = store.audit_row(*pointer)
    record = parse(json.loads(row.body)) if row is not None else None
    if not isinstance(record, Checkpoint):
        raise FailedPrecondition("audit log: the latest prune checkpoint is missing; run "
                                 "`wallet-signer audit verify`")
    return dict(record.heads)


def _line(data: Mapping[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n"


def export(store: Store, before: str, to: Path) -> tuple[int, Heads]:
    """Write every record older than `before` still in the store to `to` (a new file);
    returns (records, heads at the cut)."""
    start = _start_heads(store)
    cut = {w: h for w, h in store.audit_cut(before).items() if h[0] > start.get(w, (0, ""))[0]}
    count = 0
    try:
        out = to.open("x")
    except FileExistsError:
        raise InvalidRequest(f"--to: {to} exists; an export never overwrites a file") from None
    except OSError as exc:
        raise InvalidRequest(f"--to: cannot create {to}: {exc.strerror}") from None
    with out:
        out.write(_line({"export": FORMAT, "version": VERSION, "before": before,
                         "from": {w: list(h) for w, h in start.items()}}))
        for writer, (last, _) in sorted(cut.items()):
            after = start.get(writer, (0, GENESIS))[0]
            for row in store.audit_rows(writer, after=after, through=last):
                out.write(_line({"writer": row.writer, "seq": row.seq, "at": row.at,
                                 "body": row.body, "prev_hash": row.prev_hash,
                                 "hash": row.hash}))
                count += 1
        out.write(_line({"heads": {w: list(h) for w, h in sorted(cut.items())},
                         "records": count}))
    return count, cut


class _ExportFile:
    """An export read back and checked line by line (memory bounded by the chain count)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def check(self) -> tuple[str, Heads, Heads, dict[str, str], int, str]:
        """(before, from, heads, per-writer digest of its hashes, records, sha256 of the
        file), after checking every row's hash and link; raises InvalidRequest naming the
        first line that is wrong."""
        digest = hashlib.sha256()
        lines = self._lines(digest)
        try:
            header = next(lines)[1]
        except StopIteration:
            raise InvalidRequest(f"--export: {self.path} is empty") from None
        if header.get("export") != FORMAT or header.get("version") != VERSION:
            raise InvalidRequest(f"--export: {self.path} is not a wallet-signer audit export")
        start = _heads(header.get("from"), "from")
        at: Heads = dict(start)
        hashes: dict[str, Any] = {}
        trailer: dict[str, Any] | None = None
        records = 0
        for number, line in lines:
            if trailer is not None:
                raise InvalidRequest(f"--export: line {number}: data after the heads line")
            if "heads" in line:
                trailer = line
                continue
            try:
                row = AuditRow(str(line["writer"]), int(line["seq"]), str(line["at"]),
                               str(line["body"]), str(line["prev_hash"]), str(line["hash"]))
            except (KeyError, TypeError, ValueError):
                raise InvalidRequest(f"--export: line {number}: not an audit row") from None
            seq, prev = at.get(row.writer, (0, GENESIS))
            if (row.seq, row.prev_hash) != (seq + 1, prev) or record_hash(
                row.writer, row.seq, row.prev_hash, row.body
            ) != row.hash:
                raise InvalidRequest(
                    f"--export: line {number}: writer {row.writer} record {row.seq} does not "
                    "follow the one before it or does not match its hash (the file was changed)"
                )
            at[row.writer] = (row.seq, row.hash)
            hashes.setdefault(row.writer, hashlib.sha256()).update(row.hash.encode())
            records += 1
        if trailer is None:
            raise InvalidRequest(f"--export: {self.path} has no heads line (cut short)")
        heads = _heads(trailer.get("heads"), "heads")
        if trailer.get("records") != records or any(at.get(w) != h for w, h in heads.items()) \
                or set(hashes) - set(heads):
            raise InvalidRequest(f"--export: {self.path}: its heads line does not match its rows")
        return (str(header.get("before")), start, heads,
                {w: h.hexdigest() for w, h in hashes.items()}, records, digest.hexdigest())

    def _lines(self, digest: Any) -> Iterator[tuple[int, dict[str, Any]]]:
        try:
            source = self.path.open("rb")
        except OSError as exc:
            raise InvalidRequest(f"--export: cannot read {self.path}: {exc.strerror}") from None
        with source:
            for number, raw in enumerate(source, 1):
                digest.update(raw)
                try:
                    line = json.loads(raw)
                except ValueError:
                    raise InvalidRequest(f"--export: line {number}: not JSON") from None
                if not isinstance(line, dict):
                    raise InvalidRequest(f"--export: line {number}: not a JSON object")
                yield number, line


def _heads(value: Any, name: str) -> Heads:
    try:
        return {str(w): (int(s), str(h)) for w, (s, h) in dict(value).items()}
    except (TypeError, ValueError):
        raise InvalidRequest(f"--export: its {name} are not writer -> [seq, hash]") from None


def prune(store: Store, before: str, export_file: Path, operator: str) -> Checkpoint:
    """Delete what `export_file` (an `export` of the same `before`) holds, and only that,
    after checking the file and that the store holds exactly those records; then leave the
    checkpoint record, in the same transaction. Also drops budget rows no window counts."""
    file_before, start, heads, digests, records, file_sha = _ExportFile(export_file).check()
    if file_before != before:
        raise InvalidRequest(
            f"--export: {export_file} holds the records before {file_before}, not before "
            f"{before}: export the same range first"
        )
    if start != _start_heads(store):
        raise FailedPrecondition(
            f"--export: {export_file} starts where an earlier prune left off, but the store "
            "has been pruned since: export again"
        )
    for writer, (last, _) in sorted(heads.items()):
        after = start.get(writer, (0, GENESIS))[0]
        stored = hashlib.sha256()
        for row in store.audit_rows(writer, after=after, through=last):
            stored.update(row.hash.encode())
        if stored.hexdigest() != digests.get(writer, hashlib.sha256().hexdigest()):
            raise FailedPrecondition(
                f"writer {writer}: the store's records up to {last} are not the ones in "
                f"{export_file} (changed, or already pruned): nothing was deleted"
            )
    checkpoint = Checkpoint(before=before, heads={**start, **heads}, records=records,
                            export_sha256=file_sha, operator=operator)
    budget_cutoff = min(datetime.fromisoformat(before).timestamp(),
                        time.time() - BUDGET_RETENTION_SECONDS)

    def remove(batch: Batch, rows: list[AuditRow]) -> None:
        for writer, (last, _) in heads.items():
            batch.delete_audit_through(writer, last)
        batch.add_checkpoint(rows[0].writer, rows[0].seq)
        batch.drop_budget_rows(budget_cutoff)

    audit = AuditLog(store, role="cli")
    audit.start()  # its chain_start witnesses every chain as it stands before the prune
    audit.write([checkpoint], also=remove)
    return checkpoint


def export_audit(config: Config, before: str, to: Path) -> tuple[int, Heads]:
    from signer.admin.state import configured_store

    with configured_store(config) as store:
        return export(store, parse_before(before), to)


def prune_audit(config: Config, before: str, export_file: Path) -> Checkpoint:
    from signer.admin.state import _operator, configured_store

    with configured_store(config) as store:
        return prune(store, parse_before(before), export_file, _operator())
