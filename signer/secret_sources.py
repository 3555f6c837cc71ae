"""Reading a secret from where the config says it lives: an environment variable or a file.

The `*_FILE` convention of Docker and Kubernetes secrets. Errors name the source, never the
value, and are ConfigError: a missing secret stops the service at start-up.
"""

import os
from pathlib import Path

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
