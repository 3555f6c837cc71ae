"""Reading a secret from where the config says it lives: an environment variable or a file.

The `*_FILE` convention of Docker and Kubernetes secrets. Errors name the source, never the
value, and are ConfigError: a missing secret stops the service at start-up.
"""

import os
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from signer.errors import ConfigError


def read_secret(where: str, what: str, env: str | None, file: Path | None) -> str:
    """The text of `what` (e.g. "PIN") for config entry `where`, with surrounding whitespace
    removed; exactly one of `env` and `file` is set (the config model enforces it)."""
    if env is not None:
        text = os.environ.get(env)
        if text is None:
            raise ConfigError(f"{where}: environment variable {env} ({what}) is not set")
    elif file is not None:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"{where}: cannot read {what} file {file}: {type(exc).__name__}"
            ) from None
    else:
        raise ConfigError(f"{where}: no {what} source configured")
    text = text.strip()
    if not text:
        raise ConfigError(f"{where}: the {what} is empty")
    return text


# libpq connection parameters that carry a secret (a password, or the client key's passphrase)
_SECRET_URL_PARAMETERS = frozenset({"password", "sslpassword"})


def inline_password(url: str) -> str | None:
    """Where `url` carries a password (`user:PASSWORD@host`, `?password=`), or None. Such a
    URL would be logged, shown by `ps` and kept in shell history: point to a file instead."""
    parts = urlsplit(url)
    if parts.password is not None:
        return "the user:password@ part"
    for name, _ in parse_qsl(parts.query, keep_blank_values=True):
        if name.lower() in _SECRET_URL_PARAMETERS:
            return f"the {name} parameter"
    return None


def redacted_url(url: str) -> str:
    """`url` as a log line may show it: no password, no query, and for http(s) no path either
    (node providers put their API key in the path, e.g. /v3/KEY)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    user = f"{parts.username}@" if parts.username else ""
    port = f":{parts.port}" if parts.port else ""
    if parts.scheme in ("http", "https"):
        return f"{parts.scheme}://{host}{port}" + ("/..." if parts.path.strip("/") else "")
    return f"{parts.scheme}://{user}{host}{port}{parts.path}" + ("?..." if parts.query else "")
