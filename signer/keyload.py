"""Opening every configured key at start-up: `[keys]` entries and `[key_sources]` folders.

Keys are opened in parallel, at most `server.key_load_concurrency` at once (a keystore at the
standard scrypt cost takes about a second of CPU and 256 MiB), with progress in the log when
there are many. A `[keys]` entry that fails stops the start-up (exit 3 for a backend fault,
2 for bad configuration); a key found by a `[key_sources]` entry that fails is reported by its
name and skipped, and the others serve. Listing a source (its folder, Vault path or Secrets
Manager selection) must succeed: a replica never starts without knowing which keys it lacks.

Naming: a source's keys are named after the file (without `.json`), the Vault secret, or the
Secrets Manager secret (without `name_prefix`, and without a leading `/`). A name that is not
a valid key id is reported and skipped; a name already used by `[keys]` or by another source
stops the start-up, naming both.
"""

import logging
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from signer.backends.base import DigestBackend
from signer.config import (
    KEY_ID_PATTERN,
    AwsSecretKeyConfig,
    AwsSecretSourceConfig,
    Config,
    EnvKeyConfig,
    KeyConfig,
    KeySourceConfig,
    KeystoreKeyConfig,
    KeystoreSourceConfig,
    KmsKeyConfig,
    Pkcs11KeyConfig,
    VaultKeyConfig,
    VaultSourceConfig,
)
from signer.errors import ConfigError, SignerError
from signer.secret_sources import read_secret
from signer.wallet import WalletSigner

log = logging.getLogger(__name__)

PROGRESS_EVERY_SECONDS = 5.0
_KEY_ID = re.compile(KEY_ID_PATTERN)


@dataclass(frozen=True)
class KeyTask:
    """One key to open: its id, where it comes from (for errors), and how to open it."""

    key_id: str
    origin: str  # "keys.hot" or "key_sources.agents"
    open: Callable[[], DigestBackend]
    pinned_address: str | None = None
    required: bool = True  # a [keys] entry; a source's key is skipped when it fails


def open_backend(
    key_id: str, config: KeyConfig, max_concurrent_calls: int | None = None
) -> DigestBackend:
    """Open one key's backend; heavy libraries are imported only for backends in use.

    `max_concurrent_calls`: how many signing calls the server runs at once (its workers), which
    a backend that keeps its own threads or connections (KMS) sizes them by."""
    backend: DigestBackend
    if isinstance(config, EnvKeyConfig):
        from signer.backends.env import EnvBackend

        return EnvBackend.from_source(key_id, config.private_key_env, config.private_key_file)
    if isinstance(config, Pkcs11KeyConfig):
        from signer.backends.pkcs11 import Pkcs11Backend

        backend = Pkcs11Backend.open(key_id, config)
    elif isinstance(config, KmsKeyConfig):
        from signer.backends.kms import KmsBackend

        backend = KmsBackend.open(key_id, config, max_concurrent_calls)
    elif isinstance(config, KeystoreKeyConfig):
        from signer.backends.keystore import KeystoreBackend

        backend = KeystoreBackend.open(key_id, config)
    elif isinstance(config, VaultKeyConfig):
        from signer.backends.vault import VaultBackend

        backend = VaultBackend.open(key_id, config)
    elif isinstance(config, AwsSecretKeyConfig):
        from signer.backends.aws_secret import AwsSecretBackend

        backend = AwsSecretBackend.open(key_id, config)
    else:  # pragma: no cover
        raise AssertionError(f"unhandled backend config {type(config).__name__}")
    return backend


def key_tasks(config: Config) -> list[KeyTask]:
    """Every key to open: the `[keys]` entries, then what each `[key_sources]` entry lists."""
    workers = config.server.max_workers + 1  # +1: the periodic self-test may sign meanwhile
    tasks = [
        KeyTask(key_id, f"keys.{key_id}",
                lambda k=key_id, c=key_config: open_backend(k, c, workers),  # type: ignore[misc]
                key_config.address)
        for key_id, key_config in config.keys.items()
    ]
    taken = {task.key_id: task.origin for task in tasks}
    for name, source in config.key_sources.items():
        for task in source_tasks(name, source):
            if task.key_id in taken:
                raise ConfigError(
                    f"{task.origin}: found key {task.key_id!r}, which {taken[task.key_id]} "
                    "already names: rename one of them"
                )
            taken[task.key_id] = task.origin
            tasks.append(task)
    return tasks


def source_tasks(name: str, source: KeySourceConfig) -> list[KeyTask]:
    where = f"key_sources.{name}"
    if isinstance(source, KeystoreSourceConfig):
        found = _keystore_files(where, source)
    elif isinstance(source, VaultSourceConfig):
        found = _vault_secrets(where, source)
    else:
        found = _aws_secrets(where, source)
    tasks = []
    for key_id, opener in found:
        if not _KEY_ID.fullmatch(key_id):
            log.error("%s: skipping %r: not a valid key id (letters, digits, _ . -, at most 64, "
                      "starting with a letter or digit); rename it", where, key_id[:100])
            continue
        tasks.append(KeyTask(key_id, where, opener, required=False))
    log.info("%s (%s): %d keys found", where, source.backend, len(tasks))
    return tasks


def _keystore_files(
    where: str, source: KeystoreSourceConfig
) -> list[tuple[str, Callable[[], DigestBackend]]]:
    from signer.backends.keystore import KeystoreBackend, decrypt_keystore, read_keystore_file

    try:
        files = sorted(p for p in source.folder.iterdir()
                       if p.is_file() and not p.name.startswith("."))
    except OSError as exc:
        raise ConfigError(f"{where}: cannot list folder {source.folder}: {exc.strerror}") from None
    password = read_secret(where, "keystore password", source.password_env, source.password_file)

    def opener(path: Path, key_id: str) -> Callable[[], DigestBackend]:
        def open_one() -> DigestBackend:
            at = f"{where}: key {key_id!r}"
            text = read_keystore_file(at, path)
            return KeystoreBackend(decrypt_keystore(text, password, f"{at}: keystore file {path}"))
        return open_one

    return [(p.name.removesuffix(".json"), opener(p, p.name.removesuffix(".json")))
            for p in files]


def _vault_secrets(
    where: str, source: VaultSourceConfig
) -> list[tuple[str, Callable[[], DigestBackend]]]:
    from signer.backends.vault import VaultBackend, session_for

    session = session_for(source, where)
    try:
        folder = source.path.strip("/")
        names = session.list(source.mount, folder)
    except BaseException:
        session.release()
        raise

    def opener(secret: str) -> Callable[[], DigestBackend]:
        def open_one() -> DigestBackend:
            session.acquire()
            try:
                return VaultBackend.read(f"{where}: key {secret!r}", session, source.mount,
                                         f"{folder}/{secret}", source.field,
                                         source.password_field, None)
            except BaseException:
                session.release()
                raise
        return open_one

    openers = [(name, opener(name)) for name in names]
    session.release()  # each key holds its own reference from here
    return openers


def _aws_secrets(
    where: str, source: AwsSecretSourceConfig
) -> list[tuple[str, Callable[[], DigestBackend]]]:
    from signer.backends.aws_secret import (
        AwsSecretBackend,
        SecretsSettings,
        client_for,
        list_secret_names,
    )

    client = client_for(SecretsSettings.of(source))
    names = [n for n in list_secret_names(client, where, source)
             if n != source.password_secret_id]

    def opener(secret_id: str, key_id: str) -> Callable[[], DigestBackend]:
        def open_one() -> DigestBackend:
            return AwsSecretBackend.read(f"{where}: key {key_id!r}", client, secret_id,
                                         source.version_stage, source.password_secret_id)
        return open_one

    result = []
    for name in names:
        key_id = name.removeprefix(source.name_prefix or "").lstrip("/")
        result.append((key_id, opener(name, key_id)))
    return result


def open_signers(config: Config) -> list[WalletSigner]:
    """Open every key (in parallel, bounded); on a `[keys]` failure close what was opened and
    raise the first failure in config order."""
    tasks = key_tasks(config)
    results: list[WalletSigner | BaseException | None] = [None] * len(tasks)
    started = time.monotonic()
    progress = _Progress(len(tasks), started)

    def run(index: int) -> None:
        task = tasks[index]
        try:
            backend = task.open()
        except BaseException as exc:
            results[index] = exc
        else:
            try:
                results[index] = WalletSigner(task.key_id, backend, task.pinned_address)
            except BaseException as exc:
                backend.close()
                results[index] = exc
        progress.done()

    with ThreadPoolExecutor(max_workers=config.server.key_load_concurrency,
                            thread_name_prefix="key-load") as pool:
        list(pool.map(run, range(len(tasks))))
    signers: list[WalletSigner] = []
    failure: BaseException | None = None
    for task, result in zip(tasks, results, strict=True):
        if isinstance(result, WalletSigner):
            signers.append(result)
            log.info("key %r: backend %s, address %s", task.key_id, result.backend_name,
                     result.address)
        elif task.required:
            failure = failure or result
        else:
            reason = result if isinstance(result, SignerError) else type(result).__name__
            log.error("%s: key %r failed to load and is skipped: %s", task.origin, task.key_id,
                      reason)
    if failure is not None:
        for signer in signers:
            signer.backend.close()
        raise failure
    if len(tasks) >= 2:
        seconds = time.monotonic() - started
        log.info("opened %d of %d keys in %.1f s", len(signers), len(tasks), seconds)
    return signers


class _Progress:
    """Logs "opened N of M keys" every few seconds while a long start-up runs."""

    def __init__(self, total: int, started: float) -> None:
        import threading

        self.total = total
        self.count = 0
        self.started = started
        self.last = started
        self._lock = threading.Lock()

    def done(self) -> None:
        with self._lock:
            self.count += 1
            now = time.monotonic()
            if now - self.last < PROGRESS_EVERY_SECONDS or self.count == self.total:
                return
            self.last = now
            rate = self.count / max(now - self.started, 1e-9)
            log.info("opening keys: %d of %d done (%.1f keys/s)", self.count, self.total, rate)
