"""KMS fixtures: one moto emulator subprocess per session, a fresh key per test, fault controls.

boto3 talks to the emulator over real HTTP on 127.0.0.1 with dummy credentials; the instance
metadata service and any local AWS profile are switched off for the whole session.
"""

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from signer.config import KmsKeyConfig
from signer.wallet import WalletSigner
from tests.conftest import skip_or_fail

REGION = "us-east-1"
# A short base keeps fault tests fast while botocore's retry logic (which errors retry, how
# many attempts, jitter, retry quota) stays exactly as in production.
FAST_BACKOFF = {"throttling_base_scale": 0.02, "non_throttling_base_scale": 0.005}


@pytest.fixture(scope="session")
def kms_emulator() -> Iterator[Any]:
    """The running `tests.support.kms_emulator.Emulator`."""
    try:
        import boto3  # noqa: F401
        import moto.server  # noqa: F401
    except ImportError as exc:
        skip_or_fail("kms", f"boto3 and moto[server] are needed for KMS tests ({exc.name} missing)")
    from signer.backends import kms
    from tests.support.kms_emulator import Emulator, emulator_environment

    with pytest.MonkeyPatch.context() as patch:
        for name, value in emulator_environment():
            patch.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ROLE_ARN",
                     "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                     "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_ENDPOINT_URL"):
            patch.delenv(name, raising=False)
        emulator = Emulator.start()
        try:
            yield emulator
        finally:
            kms.reset_clients()
            emulator.stop()


@pytest.fixture(scope="session")
def kms_admin_client(kms_emulator: Any) -> Any:
    """A plain boto3 client on the emulator, for set-up and inspection."""
    import boto3

    return boto3.session.Session().client(
        "kms", region_name=REGION, endpoint_url=kms_emulator.endpoint_url
    )


@pytest.fixture
def make_kms_key(kms_admin_client: Any) -> Callable[..., str]:
    """make_kms_key(spec=..., usage=...) -> the new key's id."""

    def make(spec: str = "ECC_SECG_P256K1", usage: str = "SIGN_VERIFY") -> str:
        reply = kms_admin_client.create_key(KeySpec=spec, KeyUsage=usage)
        return str(reply["KeyMetadata"]["KeyId"])

    return make


@pytest.fixture
def kms_config(kms_emulator: Any) -> Callable[..., KmsKeyConfig]:
    """kms_config(kms_key_id, **overrides) -> a validated KmsKeyConfig on the emulator."""

    def make(kms_key_id: str, **overrides: Any) -> KmsKeyConfig:
        fields = {"backend": "kms", "kms_key_id": kms_key_id, "region": REGION,
                  "endpoint_url": kms_emulator.endpoint_url, **overrides}
        return KmsKeyConfig.model_validate(fields)

    return make


@pytest.fixture
def open_kms_signer(
    make_kms_key: Callable[..., str], kms_config: Callable[..., KmsKeyConfig]
) -> Callable[..., WalletSigner]:
    """open_kms_signer(key_id="kms", **config overrides) -> WalletSigner on a fresh key."""
    from signer.backends.kms import KmsBackend

    def open_signer(key_id: str = "kms", **overrides: Any) -> WalletSigner:
        config = kms_config(make_kms_key(), **overrides)
        return WalletSigner(key_id, KmsBackend.open(key_id, config))

    return open_signer


@pytest.fixture
def kms_signer(open_kms_signer: Callable[..., WalletSigner]) -> WalletSigner:
    return open_kms_signer()


@pytest.fixture
def kms_faults(kms_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The emulator, with faults cleared after the test, fast backoff, fresh clients.

    Fresh clients because each botocore client keeps a retry quota that faults drain.
    """
    from botocore.retries.standard import ExponentialBackoff

    from signer.backends import kms

    monkeypatch.setattr(ExponentialBackoff, "_DEFAULT_BACKOFF_CONFIG", FAST_BACKOFF)
    kms.reset_clients()
    kms_emulator.clear()
    yield kms_emulator
    kms_emulator.clear()
    kms.reset_clients()
