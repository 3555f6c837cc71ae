"""PKCS#11 (SoftHSM) fixtures: filled by the PKCS#11 backend work."""

import pytest

from tests.conftest import skip_or_fail


@pytest.fixture
def pkcs11_signer():  # type: ignore[no-untyped-def]
    skip_or_fail("pkcs11", "the PKCS#11 backend is not built yet")
