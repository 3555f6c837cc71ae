"""The one table from signer.errors to EIP-1474 codes: every class has a code, the most specific
class decides (a policy denial is -32003 although it is an AccessDenied)."""

import inspect

import pytest

from signer import errors
from signer.jsonrpc import errors as codes
from signer.jsonrpc.upstream import UpstreamUnavailable

EXPECTED = {
    errors.InvalidRequest: -32602,
    errors.KeyNotFound: -32000,
    errors.AccessDenied: -32000,
    errors.PolicyDenied: -32003,
    errors.PermissionDenied: -32002,
    errors.FailedPrecondition: -32000,
    errors.KeyFrozen: -32000,
    errors.BackendUnavailable: -32002,
    errors.StoreUnavailable: -32002,
    UpstreamUnavailable: -32002,
    errors.DeadlineExceeded: -32002,
    errors.ConfigError: -32000,
}


@pytest.mark.parametrize(("cls", "code"), EXPECTED.items(), ids=lambda v: getattr(v, "__name__", v))
def test_each_error_class_has_its_code(cls, code):
    assert codes.code_for(cls("why")) == code


def test_every_error_class_is_in_the_table():
    classes = {c for _, c in inspect.getmembers(errors, inspect.isclass)
               if issubclass(c, errors.SignerError) and c is not errors.SignerError}
    assert classes <= set(codes.CODE_BY_ERROR) | {c for c in classes if c.__mro__[1] in codes.CODE_BY_ERROR}
