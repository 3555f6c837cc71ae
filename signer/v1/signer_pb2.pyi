from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListKeysRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class KeyInfo(_message.Message):
    __slots__ = ("key_id", "address", "backend", "public_key", "frozen", "frozen_reason", "versions")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    FROZEN_FIELD_NUMBER: _ClassVar[int]
    FROZEN_REASON_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    address: str
    backend: str
    public_key: bytes
    frozen: bool
    frozen_reason: str
    versions: _containers.RepeatedCompositeFieldContainer[KeyVersion]
    def __init__(self, key_id: _Optional[str] = ..., address: _Optional[str] = ..., backend: _Optional[str] = ..., public_key: _Optional[bytes] = ..., frozen: _Optional[bool] = ..., frozen_reason: _Optional[str] = ..., versions: _Optional[_Iterable[_Union[KeyVersion, _Mapping]]] = ...) -> None: ...

class KeyVersion(_message.Message):
    __slots__ = ("version", "address", "state", "changed_at", "reason")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CHANGED_AT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    version: int
    address: str
    state: str
    changed_at: str
    reason: str
    def __init__(self, version: _Optional[int] = ..., address: _Optional[str] = ..., state: _Optional[str] = ..., changed_at: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ListKeysResponse(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[KeyInfo]
    def __init__(self, keys: _Optional[_Iterable[_Union[KeyInfo, _Mapping]]] = ...) -> None: ...

class GetAddressRequest(_message.Message):
    __slots__ = ("key_id",)
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    def __init__(self, key_id: _Optional[str] = ...) -> None: ...

class GetAddressResponse(_message.Message):
    __slots__ = ("key_id", "address", "public_key")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    address: str
    public_key: bytes
    def __init__(self, key_id: _Optional[str] = ..., address: _Optional[str] = ..., public_key: _Optional[bytes] = ...) -> None: ...

class AccessListEntry(_message.Message):
    __slots__ = ("address", "storage_keys")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STORAGE_KEYS_FIELD_NUMBER: _ClassVar[int]
    address: str
    storage_keys: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, address: _Optional[str] = ..., storage_keys: _Optional[_Iterable[bytes]] = ...) -> None: ...

class Authorization(_message.Message):
    __slots__ = ("chain_id", "address", "nonce", "y_parity", "r", "s")
    CHAIN_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    Y_PARITY_FIELD_NUMBER: _ClassVar[int]
    R_FIELD_NUMBER: _ClassVar[int]
    S_FIELD_NUMBER: _ClassVar[int]
    chain_id: int
    address: str
    nonce: int
    y_parity: int
    r: bytes
    s: bytes
    def __init__(self, chain_id: _Optional[int] = ..., address: _Optional[str] = ..., nonce: _Optional[int] = ..., y_parity: _Optional[int] = ..., r: _Optional[bytes] = ..., s: _Optional[bytes] = ...) -> None: ...

class Transaction(_message.Message):
    __slots__ = ("type", "chain_id", "nonce", "to", "value", "gas_limit", "gas_price", "max_fee_per_gas", "max_priority_fee_per_gas", "data", "access_list", "authorization_list", "max_fee_per_blob_gas", "blob_versioned_hashes")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CHAIN_ID_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    GAS_LIMIT_FIELD_NUMBER: _ClassVar[int]
    GAS_PRICE_FIELD_NUMBER: _ClassVar[int]
    MAX_FEE_PER_GAS_FIELD_NUMBER: _ClassVar[int]
    MAX_PRIORITY_FEE_PER_GAS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    ACCESS_LIST_FIELD_NUMBER: _ClassVar[int]
    AUTHORIZATION_LIST_FIELD_NUMBER: _ClassVar[int]
    MAX_FEE_PER_BLOB_GAS_FIELD_NUMBER: _ClassVar[int]
    BLOB_VERSIONED_HASHES_FIELD_NUMBER: _ClassVar[int]
    type: int
    chain_id: int
    nonce: int
    to: str
    value: str
    gas_limit: int
    gas_price: str
    max_fee_per_gas: str
    max_priority_fee_per_gas: str
    data: bytes
    access_list: _containers.RepeatedCompositeFieldContainer[AccessListEntry]
    authorization_list: _containers.RepeatedCompositeFieldContainer[Authorization]
    max_fee_per_blob_gas: str
    blob_versioned_hashes: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, type: _Optional[int] = ..., chain_id: _Optional[int] = ..., nonce: _Optional[int] = ..., to: _Optional[str] = ..., value: _Optional[str] = ..., gas_limit: _Optional[int] = ..., gas_price: _Optional[str] = ..., max_fee_per_gas: _Optional[str] = ..., max_priority_fee_per_gas: _Optional[str] = ..., data: _Optional[bytes] = ..., access_list: _Optional[_Iterable[_Union[AccessListEntry, _Mapping]]] = ..., authorization_list: _Optional[_Iterable[_Union[Authorization, _Mapping]]] = ..., max_fee_per_blob_gas: _Optional[str] = ..., blob_versioned_hashes: _Optional[_Iterable[bytes]] = ...) -> None: ...

class SignTransactionRequest(_message.Message):
    __slots__ = ("key_id", "transaction", "unsigned_transaction")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_FIELD_NUMBER: _ClassVar[int]
    UNSIGNED_TRANSACTION_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    transaction: Transaction
    unsigned_transaction: bytes
    def __init__(self, key_id: _Optional[str] = ..., transaction: _Optional[_Union[Transaction, _Mapping]] = ..., unsigned_transaction: _Optional[bytes] = ...) -> None: ...

class Signature(_message.Message):
    __slots__ = ("r", "s", "v")
    R_FIELD_NUMBER: _ClassVar[int]
    S_FIELD_NUMBER: _ClassVar[int]
    V_FIELD_NUMBER: _ClassVar[int]
    r: bytes
    s: bytes
    v: int
    def __init__(self, r: _Optional[bytes] = ..., s: _Optional[bytes] = ..., v: _Optional[int] = ...) -> None: ...

class SignTransactionResponse(_message.Message):
    __slots__ = ("raw_transaction", "transaction_hash", "sender", "signature")
    RAW_TRANSACTION_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_HASH_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    raw_transaction: bytes
    transaction_hash: bytes
    sender: str
    signature: Signature
    def __init__(self, raw_transaction: _Optional[bytes] = ..., transaction_hash: _Optional[bytes] = ..., sender: _Optional[str] = ..., signature: _Optional[_Union[Signature, _Mapping]] = ...) -> None: ...

class Status(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class SignTransactionsResponse(_message.Message):
    __slots__ = ("index", "signed", "error")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SIGNED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    index: int
    signed: SignTransactionResponse
    error: Status
    def __init__(self, index: _Optional[int] = ..., signed: _Optional[_Union[SignTransactionResponse, _Mapping]] = ..., error: _Optional[_Union[Status, _Mapping]] = ...) -> None: ...

class SignMessageRequest(_message.Message):
    __slots__ = ("key_id", "message")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    message: bytes
    def __init__(self, key_id: _Optional[str] = ..., message: _Optional[bytes] = ...) -> None: ...

class SignMessageResponse(_message.Message):
    __slots__ = ("signature", "digest")
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    signature: bytes
    digest: bytes
    def __init__(self, signature: _Optional[bytes] = ..., digest: _Optional[bytes] = ...) -> None: ...

class SignTypedDataRequest(_message.Message):
    __slots__ = ("key_id", "typed_data_json")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    TYPED_DATA_JSON_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    typed_data_json: str
    def __init__(self, key_id: _Optional[str] = ..., typed_data_json: _Optional[str] = ...) -> None: ...

class SignTypedDataResponse(_message.Message):
    __slots__ = ("signature", "digest")
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    signature: bytes
    digest: bytes
    def __init__(self, signature: _Optional[bytes] = ..., digest: _Optional[bytes] = ...) -> None: ...

class SignAuthorizationRequest(_message.Message):
    __slots__ = ("key_id", "chain_id", "address", "nonce")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    CHAIN_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    chain_id: int
    address: str
    nonce: int
    def __init__(self, key_id: _Optional[str] = ..., chain_id: _Optional[int] = ..., address: _Optional[str] = ..., nonce: _Optional[int] = ...) -> None: ...

class SignAuthorizationResponse(_message.Message):
    __slots__ = ("authorization",)
    AUTHORIZATION_FIELD_NUMBER: _ClassVar[int]
    authorization: Authorization
    def __init__(self, authorization: _Optional[_Union[Authorization, _Mapping]] = ...) -> None: ...

class EvaluatePolicyRequest(_message.Message):
    __slots__ = ("transaction", "message", "typed_data", "authorization")
    TRANSACTION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TYPED_DATA_FIELD_NUMBER: _ClassVar[int]
    AUTHORIZATION_FIELD_NUMBER: _ClassVar[int]
    transaction: SignTransactionRequest
    message: SignMessageRequest
    typed_data: SignTypedDataRequest
    authorization: SignAuthorizationRequest
    def __init__(self, transaction: _Optional[_Union[SignTransactionRequest, _Mapping]] = ..., message: _Optional[_Union[SignMessageRequest, _Mapping]] = ..., typed_data: _Optional[_Union[SignTypedDataRequest, _Mapping]] = ..., authorization: _Optional[_Union[SignAuthorizationRequest, _Mapping]] = ...) -> None: ...

class BudgetStatus(_message.Message):
    __slots__ = ("name", "spent", "limit", "window_seconds", "request_spends")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SPENT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_SPENDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    spent: str
    limit: str
    window_seconds: int
    request_spends: str
    def __init__(self, name: _Optional[str] = ..., spent: _Optional[str] = ..., limit: _Optional[str] = ..., window_seconds: _Optional[int] = ..., request_spends: _Optional[str] = ...) -> None: ...

class EvaluatePolicyResponse(_message.Message):
    __slots__ = ("allowed", "rule_id", "reason", "budgets", "policy")
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    RULE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    BUDGETS_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    allowed: bool
    rule_id: str
    reason: str
    budgets: _containers.RepeatedCompositeFieldContainer[BudgetStatus]
    policy: str
    def __init__(self, allowed: _Optional[bool] = ..., rule_id: _Optional[str] = ..., reason: _Optional[str] = ..., budgets: _Optional[_Iterable[_Union[BudgetStatus, _Mapping]]] = ..., policy: _Optional[str] = ...) -> None: ...

class ReloadRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReloadResponse(_message.Message):
    __slots__ = ("reloaded", "added", "changed", "removed", "failed")
    RELOADED_FIELD_NUMBER: _ClassVar[int]
    ADDED_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    reloaded: bool
    added: _containers.RepeatedScalarFieldContainer[str]
    changed: _containers.RepeatedScalarFieldContainer[str]
    removed: _containers.RepeatedScalarFieldContainer[str]
    failed: _containers.RepeatedCompositeFieldContainer[ReloadFailure]
    def __init__(self, reloaded: _Optional[bool] = ..., added: _Optional[_Iterable[str]] = ..., changed: _Optional[_Iterable[str]] = ..., removed: _Optional[_Iterable[str]] = ..., failed: _Optional[_Iterable[_Union[ReloadFailure, _Mapping]]] = ...) -> None: ...

class ReloadFailure(_message.Message):
    __slots__ = ("key_id", "reason")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    reason: str
    def __init__(self, key_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...
