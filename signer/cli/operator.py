"""Operator commands: keys (list, create, import, freeze, unfreeze), audit, store, policy.
Each calls signer.admin (imported when the command runs) and prints the result."""

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from signer.cli.common import channel, check_tls_flags, load_config, optional_config, stub
from signer.errors import InvalidRequest

if TYPE_CHECKING:
    from signer.app.audit import VerifyReport

# The provisioning flags of each backend: any other backend's flag is an error, not ignored.
BACKEND_FLAGS = {
    "pkcs11": ("--label", "--token-label", "--module", "--pin-env", "--pin-file"),
    "kms": ("--alias", "--region", "--endpoint-url"),
}


def _check_backend_flags(args: argparse.Namespace) -> None:
    """Refuse a flag of another backend (or of none) instead of silently ignoring it."""
    chosen = args.backend
    for backend, flags in BACKEND_FLAGS.items():
        if backend == chosen:
            continue
        for flag in flags:
            if getattr(args, flag.removeprefix("--").replace("-", "_"), None) is not None:
                if chosen is None:
                    raise InvalidRequest(f"{flag} applies only with --backend {backend}")
                raise InvalidRequest(
                    f"{flag} applies to --backend {backend}, not to --backend {chosen}"
                )


def _required(value: str | None, flag: str, backend: str) -> str:
    if not value:
        raise InvalidRequest(f"--backend {backend}: {flag} NAME is required")
    return value


def keys_list(args: argparse.Namespace) -> int:
    _check_backend_flags(args)
    check_tls_flags(args)
    if args.backend is not None and args.server:
        raise InvalidRequest("--server asks a running server, --backend the backend: not both")
    if args.backend == "pkcs11":
        return _pkcs11_list(args)
    if args.backend == "kms":
        return _kms_list(args)
    pins: list[tuple[str, str]] = []  # local keys without `address`: the pin line to paste
    if args.server:
        from signer.v1 import signer_pb2 as pb

        reply = stub(channel(args, args.server)).ListKeys(pb.ListKeysRequest(), timeout=10)
        rows = [
            (k.key_id, k.backend, k.address, _frozen_column(k.frozen_reason if k.frozen else None))
            for k in reply.keys
        ]
        versions = {k.key_id: [(v.version, v.address, v.state, v.reason) for v in k.versions]
                    for k in reply.keys}
    else:
        from signer.admin.state import frozen_keys, key_versions
        from signer.service import KeyRing

        config = load_config(args.config)
        frozen = frozen_keys(config)
        versions = {k: [(v.version, v.address, v.state, v.reason) for v in rows]
                    for k, rows in key_versions(config).items()}
        keyring = KeyRing.from_config(config)
        try:
            rows = [
                (
                    s.key_id, s.backend_name, s.address,
                    _frozen_column(frozen[s.key_id].reason if s.key_id in frozen else None),
                )
                for s in keyring
            ]
        finally:
            keyring.close()
        pins = [(k, a) for k, _, a, _ in rows if k in config.keys and not config.keys[k].address]
    for key_id, backend, address, state in rows:
        active = next((v for v in versions.get(key_id, []) if v[2] == "active"), None)
        if active is not None:  # a rotated key: the active version's address, then each version
            address = active[1]
        print(f"{key_id}\t{backend}\t{address}\t{state}")
        for version, v_address, v_state, reason in versions.get(key_id, []):
            why = f"\t{reason}" if reason else ""
            print(f"  {key_id}@{version}\t{v_address}\t{v_state}{why}")
    if pins:
        print("\n# address pinning: paste each line under its [keys.ID] table")
        for key_id, address in pins:
            print(f'[keys.{key_id}]\naddress = "{address}"')
    return 0


def _frozen_column(reason: str | None) -> str:
    return "active" if reason is None else f"FROZEN: {reason}"


def keys_freeze(args: argparse.Namespace) -> int:
    from signer.admin.state import freeze_key

    freeze_key(load_config(args.config), args.key_id, args.reason)
    print(f"key {args.key_id!r} is frozen on every replica sharing the store (within 1 s)")
    return 0


def keys_unfreeze(args: argparse.Namespace) -> int:
    from signer.admin.state import unfreeze_key

    if unfreeze_key(load_config(args.config), args.key_id):
        print(f"key {args.key_id!r} is no longer frozen")
    else:
        print(f"key {args.key_id!r} was not frozen")
    return 0


def audit_verify(args: argparse.Namespace) -> int:
    from signer.admin.state import verify_audit

    resume = _read_resume(args.resume) if args.resume else None
    report = verify_audit(load_config(args.config), resume)
    if not report.ok:
        print(f"audit log TAMPERED: {report.problem} ({report.records} records intact before it)")
        return 1
    since = " since the last verification" if resume else ""
    print(f"audit log intact: {report.records} records{since} in {report.chains} chains")
    if report.checkpoint:
        print(f"(from the prune checkpoint {report.checkpoint[0]}/{report.checkpoint[1]}: "
              "older records are in its export)")
    if args.resume:
        _write_resume(args.resume, report.heads)
    _print_witnesses(report)
    if report.incomplete:
        shown = ", ".join(report.incomplete[:10]) + (" ..." if len(report.incomplete) > 10 else "")
        print(
            f"{len(report.incomplete)} incomplete: an intent without an outcome (the process "
            f"stopped while signing; the caller got no signature from it): {shown}"
        )
    return 0


WITNESS_LINES = 20


def _print_witnesses(report: "VerifyReport") -> None:
    """Per chain, how far the other chains vouch for it: records after its newest witness
    could be deleted or rewritten (with store access, and the key if keyed) unnoticed."""
    chains = report.witnesses
    if not chains:
        return
    exposed = sorted((c for c in chains.items() if c[1].unwitnessed),
                     key=lambda c: (-c[1].unwitnessed, c[0]))
    keyed = sum(1 for c in chains.values() if c.keyed)
    print(f"witnesses: {len(chains) - len(exposed)} of {len(chains)} chains witnessed to their "
          f"head by another chain; {len(exposed)} end in unwitnessed records"
          + (f"; {keyed} keyed (HMAC-SHA256)" if report.keyed else ""))
    for writer, chain in exposed[:WITNESS_LINES]:
        role = f" ({chain.role})" if chain.role else ""
        if chain.witnessed_seq:
            newest = (f"newest witness: record {chain.witnessed_seq} (at {chain.witnessed_at}), "
                      f"by writer {chain.by} at {chain.witness_at}")
        else:
            newest = "never witnessed by another chain"
        print(f"  writer {writer}{role}: head record {chain.head_seq} at {chain.head_at}; "
              f"{newest}; {chain.unwitnessed} records over {chain.unwitnessed_seconds:.1f} s "
              "after it are UNWITNESSED")
    if len(exposed) > WITNESS_LINES:
        print(f"  ... and {len(exposed) - WITNESS_LINES} more chains with unwitnessed records")


def _read_resume(path: Path) -> dict[str, tuple[int, str]]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        return {str(w): (int(s), str(h)) for w, (s, h) in dict(data["heads"]).items()}
    except (OSError, ValueError, KeyError, TypeError):
        raise InvalidRequest(
            f"--resume: {path} is not a verification state this command wrote"
        ) from None


def _write_resume(path: Path, heads: dict[str, tuple[int, str]]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps({"heads": {w: list(h) for w, h in heads.items()}}))
    temporary.replace(path)


def audit_export(args: argparse.Namespace) -> int:
    from signer.admin.archive import export_audit

    records, heads = export_audit(load_config(args.config), args.before, args.to)
    print(f"exported {records} records of {len(heads)} chains to {args.to}")
    return 0


def audit_prune(args: argparse.Namespace) -> int:
    from signer.admin.archive import prune_audit

    checkpoint = prune_audit(load_config(args.config), args.before, args.export)
    print(f"pruned {checkpoint.records} records before {checkpoint.before} "
          f"(export sha256 {checkpoint.export_sha256}); checkpoint written")
    return 0


def audit_tail(args: argparse.Namespace) -> int:
    from signer.admin.state import tail_audit

    if not 1 <= args.n <= 100_000:
        raise InvalidRequest("-n: between 1 and 100000")
    for item in tail_audit(load_config(args.config), args.n):
        if args.json:
            print(json.dumps({"writer": item.writer, "seq": item.seq, **item.record.fields()}))
        else:
            print(_audit_line(item.record.fields()))
    return 0


def _audit_line(record: dict[str, Any]) -> str:
    fields = ("kind", "method", "key_id", "client", "decision", "status", "request_id")
    text = " ".join(f"{f}={record[f]}" for f in fields if record.get(f) not in (None, ""))
    reason = f" reason={json.dumps(record['reason'])}" if record.get("reason") else ""
    return f"{record.get('at', '?')} {text}{reason}"


def store_migrate(args: argparse.Namespace) -> int:
    from signer.admin.state import migrate_store

    version = migrate_store(load_config(args.config))
    print(f"store schema at version {version}")
    return 0


def policy_check(args: argparse.Namespace) -> int:
    from signer.admin import policy
    from signer.eth.fields import parse_address

    method, request, sender = policy.load_request(args.tx, args.message, args.typed_data,
                                                  args.authorization)
    address = args.address or sender
    self_address = parse_address(address, "--address") if address else bytes(20)
    evaluation = policy.check(load_config(args.config), args.client, method, request,
                              self_address)
    verdict = "allowed" if evaluation.allowed else "denied"
    print(verdict + (f" (rule {evaluation.rule_id})" if evaluation.rule_id else ""))
    print(evaluation.reason)
    for b in evaluation.budgets:
        print(f"budget {b.name}: {b.spent} of {b.limit} spent in the last {b.window_seconds} s; "
              f"this request spends {b.request_spends}")
    if not address:
        print("note: no --address and no `from`: $self matched no address")
    return 0 if evaluation.allowed else 1


def policy_budgets(args: argparse.Namespace) -> int:
    from signer.admin import policy

    rows = policy.budgets(load_config(args.config), args.client)
    for row in rows:
        print(f"{row.client}\t{row.policy}\t{row.budget}\t{row.spent}/{row.limit}\t"
              f"{row.window_seconds}s")
    if not rows:
        print("no client has a policy with budgets")
    return 0


def keys_create(args: argparse.Namespace) -> int:
    _check_backend_flags(args)
    if args.backend == "kms":
        from signer.admin import kms_keys

        alias = _required(args.alias, "--alias", "kms")
        created = kms_keys.create_key(alias, _kms_options(args), optional_config(args.config))
        print(f"created KMS key {created.arn}")
        print(f"alias:   {created.alias}")
        print(f"address: {created.address}")
        print("\nadd to the service's config:\n")
        print(created.config_stanza())
        return 0
    from signer.admin import pkcs11_keys

    label = _required(args.label, "--label", "pkcs11")
    _print_provisioned(pkcs11_keys.create_key(label, _pkcs11_target(args)))
    return 0


def keys_import(args: argparse.Namespace) -> int:
    _check_backend_flags(args)
    from signer.admin.key_material import read_key_material

    if args.backend == "kms":
        _required(args.alias, "--alias", "kms")
    else:
        _required(args.label, "--label", "pkcs11")
    config = optional_config(args.config)
    secret, source = read_key_material(
        key_file=args.key_file, from_keystore=args.from_keystore,
        password_file=args.password_file, password_env=args.password_env,
        from_key=args.from_key, config=config, stdin=sys.stdin,
    )
    if args.backend == "kms":
        from signer.admin import kms_keys

        imported = kms_keys.import_key(args.alias, secret, _kms_options(args), config)
        print(f"imported into KMS key {imported.arn}")
        print(f"alias:   {imported.alias}")
        print(f"address: {imported.address}")
        print(f"\n{imported.config_stanza()}")
    else:
        from signer.admin import pkcs11_keys

        target = _pkcs11_target(args)
        _print_provisioned(pkcs11_keys.import_key(args.label, secret.hex(), source, target))
    if args.from_key is None:
        print(f"# delete the plaintext key ({source}) now that the {args.backend} key holds it",
              file=sys.stderr)
    return 0


def _pkcs11_list(args: argparse.Namespace) -> int:
    from signer.admin import pkcs11_keys

    rows = pkcs11_keys.list_keys(_pkcs11_target(args))
    print("label\tid\taddress\torigin")
    for key in rows:
        print(f"{key.label}\t{key.key_id.hex()}\t{key.address or '(no public key)'}\t{key.origin}")
    return 0


def _kms_list(args: argparse.Namespace) -> int:
    from signer.admin import kms_keys

    for key in kms_keys.list_keys(_kms_options(args), optional_config(args.config)):
        aliases = ",".join(key.aliases) or "-"
        print(f"{key.key_id}\t{key.state}\t{key.address or '-'}\t{aliases}")
    return 0


def _pkcs11_target(args: argparse.Namespace) -> Any:
    from signer.admin.pkcs11_keys import TokenOptions, resolve_target

    options = TokenOptions(args.label, args.token_label, args.module, args.pin_env, args.pin_file)
    return resolve_target(options, optional_config(args.config))


def _kms_options(args: argparse.Namespace) -> Any:
    from signer.admin.kms_keys import KmsOptions

    return KmsOptions(args.region, args.endpoint_url)


def _print_provisioned(key: Any) -> None:
    print(f"{key.origin}: key {key.label!r} id {key.key_id.hex()} address {key.address}")
    print(f"\n{key.config_stanza()}")


def keys_rotate(args: argparse.Namespace) -> int:
    from signer.admin.rotation import rotate_key

    rotation = rotate_key(load_config(args.config), args.key_id, to=args.to,
                          move_alias=args.move_alias)
    old, new = rotation.previous, rotation.active
    print(f"key {args.key_id!r}: version {new.version} {new.address} is active ({rotation.made}; "
          "self-tested) on every replica sharing the store")
    print(f"version {old.version} {old.address} is draining: it signs only what "
          f"[keys.{args.key_id}] drain allows; `keys drain-status {args.key_id}` shows what is "
          f"left, then `keys retire {args.key_id} --version {old.version} --reason ...`")
    return 0


def keys_retire(args: argparse.Namespace) -> int:
    from signer.admin.rotation import retire_key

    row = retire_key(load_config(args.config), args.key_id, args.version, args.reason,
                     disable_in_backend=args.disable_in_backend)
    print(f"key {args.key_id!r} version {row.version} {row.address} is retired on every replica "
          "sharing the store: it never signs again")
    return 0


def keys_drain_status(args: argparse.Namespace) -> int:
    from signer.admin.rotation import drain_status

    rows = drain_status(load_config(args.config), args.key_id)
    if not rows:
        print(f"key {args.key_id!r} was never rotated: version 1 is its only version")
        return 0
    print("version\taddress\tstate\tpending_nonce\tbalance_wei")
    for item in rows:
        row = item.row
        nonce = "-" if item.pending_nonce is None else str(item.pending_nonce)
        balance = "-" if item.balance_wei is None else str(item.balance_wei)
        line = f"{args.key_id}@{row.version}\t{row.address}\t{row.state}\t{nonce}\t{balance}"
        if item.upstream_error:
            line += f"\t(upstream: {item.upstream_error})"
        print(line)
    if all(r.pending_nonce is None and r.upstream_error is None for r in rows):
        print("(no [jsonrpc] upstream configured: pending nonce and balance not shown)")
    return 0


def keys_reload(args: argparse.Namespace) -> int:
    from signer.v1 import signer_pb2 as pb

    check_tls_flags(args)
    reply = stub(channel(args, args.server)).Reload(pb.ReloadRequest(), timeout=args.timeout)
    if not reply.reloaded:
        print("reload failed: the server's config file did not load; nothing changed "
              "(see the server's log)")
        return 1
    for label, ids in (("added", reply.added), ("changed", reply.changed),
                       ("removed", reply.removed)):
        print(f"{label}: {', '.join(ids) or '-'}")
    for failed in reply.failed:
        print(f"FAILED {failed.key_id}: {failed.reason} (its previous version keeps serving)")
    return 1 if reply.failed else 0
