"""The trader policy of issue 9 and a red-team table against it, shared by the engine tests
(and meant to be rerun over gRPC by the application tests).

Calldata is built with web3's contract encoder from JSON ABIs, typed data as the JSON a
wallet library sends: nothing here uses signer.eth.abi, so the engine's decoding is checked
against an independent encoder.
"""

import json
import tomllib
from dataclasses import dataclass
from typing import Any

from eth_utils import to_checksum_address
from web3 import Web3

from signer.eth.batch import MULTICALL3_ADDRESS
from signer.eth.messages import TypedData, load_typed_data
from signer.eth.transactions import Authorization, UnsignedTransaction

SELF_KEY = "0x" + "00" * 31 + "01"  # the signing key of the table; its address is SELF
SELF = bytes.fromhex("7E5F4552091A69125d5DfCb7b8C2659029395Bdf")
TREASURY = bytes.fromhex("5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")
TREASURY2 = bytes.fromhex("fB6916095ca1df60bB79Ce92cE3Ea74c37c5d359")
ROUTER = bytes.fromhex("E592427A0AEce92De3Edee1F18E0157C05861564")
ATTACKER = bytes.fromhex("dbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB")
USDC = bytes.fromhex("A0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48")
PERMIT2 = bytes.fromhex("000000000022D473030F116dDEE9F6B43aC78BA3")
BATCHER = bytes.fromhex("63c0c19a282a1B52b07dD5a65b58948A07DAE32B")
SWEEPER = bytes.fromhex("D8dA6BF26964aF9D7eEd9e03E53415D37aA96045")
WETH = bytes.fromhex("C02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2")
MAX = 2**256 - 1
ETHER = 10**18


def cs(address: bytes) -> str:
    return to_checksum_address(address)


TRADER_TOML = f"""
chains = [1, 8453]
max_gas_fee_wei = "5000000000000000"
sets = {{ treasury = ["{cs(TREASURY)}", "{cs(TREASURY2)}"], routers = ["{cs(ROUTER)}"] }}

[budgets]
eth_daily  = {{ limit = "2000000000000000000", window = "24h" }}
usdc_daily = {{ limit = "10000000000", window = "24h" }}
signatures = {{ limit = "200", window = "1h" }}

[[allow]]
id = "eth-to-treasury"
to = "@treasury"
value_max = "500000000000000000"
spend = {{ eth_daily = "value", signatures = "1" }}

[[allow]]
id = "usdc-to-treasury"
to = "{cs(USDC)}"
call = "transfer(address to,uint256 amount)"
where = {{ to = {{ in = "@treasury" }}, amount = {{ lte = "1000000000" }} }}
spend = {{ usdc_daily = "amount", signatures = "1" }}

[[allow]]
id = "usdc-approve-router"
to = "{cs(USDC)}"
call = "approve(address spender,uint256 amount)"
where = {{ spender = {{ in = "@routers" }}, amount = {{ lte = "5000000000" }} }}

[[allow]]
id = "swap"
to = "@routers"
value_max = "100000000000000000"
call = "exactInputSingle((address tokenIn,address tokenOut,uint24 fee,address recipient,uint256 deadline,uint256 amountIn,uint256 amountOutMinimum,uint160 sqrtPriceLimitX96) params)"
where = {{ "params.recipient" = {{ eq = "$self" }}, "params.tokenIn" = {{ in = ["{cs(USDC)}", "{cs(WETH)}"] }} }}
spend = {{ eth_daily = "value", signatures = "1" }}

[[allow]]
id = "delegate-to-batcher"
to = "$self"
delegates = ["{cs(BATCHER)}"]

[[allow]]
id = "siwe"
kind = "message"
match = '^app\\.example\\.com wants you to sign in with your Ethereum account'
spend = {{ signatures = "1" }}

[[allow]]
id = "permit2-to-router"
kind = "typed_data"
domain = {{ verifying_contract = "{cs(PERMIT2)}" }}
primary_type = "PermitSingle"
where = {{ "message.spender" = {{ in = "@routers" }}, "message.details.amount" = {{ lte = "1000000000" }} }}
spend = {{ usdc_daily = "message.details.amount" }}

[[allow]]
id = "permit2-batch-to-router"
kind = "typed_data"
domain = {{ verifying_contract = "{cs(PERMIT2)}" }}
primary_type = "PermitBatch"
where = {{ "message.spender" = {{ in = "@routers" }}, "message.details.amount" = {{ lte = "1000000000" }} }}

[[allow]]
id = "permit2-transfer-to-router"
kind = "typed_data"
domain = {{ verifying_contract = "{cs(PERMIT2)}" }}
primary_type = "PermitBatchTransferFrom"
where = {{ "message.spender" = {{ in = "@routers" }}, "message.permitted.amount" = {{ lte = "1000000000" }} }}

[[allow]]
id = "usdc-permit-to-router"
kind = "typed_data"
domain = {{ verifying_contract = "{cs(USDC)}", chain_id = "1" }}
primary_type = "Permit"
where = {{ "message.owner" = {{ eq = "$self" }}, "message.spender" = {{ in = "@routers" }}, "message.value" = {{ lte = "1000000000" }} }}

[[deny]]
id = "no-unlimited-approvals"
call = "approve(address spender,uint256 amount)"
where = {{ amount = {{ gt = "1000000000000" }} }}
"""


def trader_config() -> dict[str, Any]:
    return tomllib.loads(TRADER_TOML)


# --- calldata, encoded by web3 from JSON ABIs -----------------------------------------------

_w3 = Web3()


def _fn(name: str, inputs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "function", "name": name, "inputs": inputs, "outputs": [],
            "stateMutability": "payable"}


def _arg(name: str, kind: str, components: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    arg: dict[str, Any] = {"name": name, "type": kind}
    if components is not None:
        arg["components"] = components
    return arg


_CALL = _arg("calls", "tuple[]", [_arg("target", "address"), _arg("callData", "bytes")])
_CALL3 = _arg("calls", "tuple[]", [_arg("target", "address"), _arg("allowFailure", "bool"),
                                   _arg("callData", "bytes")])
_CALL3V = _arg("calls", "tuple[]", [_arg("target", "address"), _arg("allowFailure", "bool"),
                                    _arg("value", "uint256"), _arg("callData", "bytes")])
_SWAP_PARAMS = _arg("params", "tuple", [
    _arg("tokenIn", "address"), _arg("tokenOut", "address"), _arg("fee", "uint24"),
    _arg("recipient", "address"), _arg("deadline", "uint256"), _arg("amountIn", "uint256"),
    _arg("amountOutMinimum", "uint256"), _arg("sqrtPriceLimitX96", "uint160"),
])
ABI = [
    _fn("transfer", [_arg("to", "address"), _arg("amount", "uint256")]),
    _fn("transferFrom", [_arg("from", "address"), _arg("to", "address"), _arg("amount", "uint256")]),
    _fn("approve", [_arg("spender", "address"), _arg("amount", "uint256")]),
    _fn("increaseAllowance", [_arg("spender", "address"), _arg("added", "uint256")]),
    _fn("setApprovalForAll", [_arg("operator", "address"), _arg("approved", "bool")]),
    _fn("exactInputSingle", [_SWAP_PARAMS]),
    _fn("aggregate", [_CALL]),
    _fn("tryAggregate", [_arg("requireSuccess", "bool"), _CALL]),
    _fn("aggregate3", [_CALL3]),
    _fn("aggregate3Value", [_CALL3V]),
    _fn("multicall", [_arg("data", "bytes[]")]),
]
_contract = _w3.eth.contract(abi=ABI)


def calldata(name: str, *args: Any) -> bytes:
    return bytes.fromhex(_contract.encode_abi(name, args=list(args))[2:])


def transfer(to: bytes, amount: int) -> bytes:
    return calldata("transfer", cs(to), amount)


def swap(recipient: bytes, token_in: bytes = USDC, amount: int = 10**6) -> bytes:
    return calldata("exactInputSingle", (cs(token_in), cs(WETH), 500, cs(recipient), 2**40,
                                         amount, 1, 0))


def tx(to: bytes = TREASURY, value: int = 0, data: bytes = b"", **fields: Any) -> UnsignedTransaction:
    base: dict[str, Any] = dict(type=2, chain_id=1, nonce=7, to=to, value=value, data=data,
                                gas_limit=100_000, max_fee_per_gas=30 * 10**9,
                                max_priority_fee_per_gas=10**9)
    base.update(fields)
    return UnsignedTransaction(**base)


def auth(address: bytes, chain_id: int = 1) -> Authorization:
    return Authorization(chain_id=chain_id, address=address, nonce=8, y_parity=0, r=1, s=1)


# --- typed data ------------------------------------------------------------------------------

_DOMAIN_TYPES = [{"name": "name", "type": "string"}, {"name": "chainId", "type": "uint256"},
                 {"name": "verifyingContract", "type": "address"}]

# Permit2's PermitDetails struct, shared by PermitSingle and PermitBatch
_PERMIT_DETAILS = [{"name": "token", "type": "address"}, {"name": "amount", "type": "uint160"},
                   {"name": "expiration", "type": "uint48"}, {"name": "nonce", "type": "uint48"}]


def permit2_single(spender: bytes, amount: int, chain_id: int | None = 1,
                   contract: bytes = PERMIT2) -> dict[str, Any]:
    domain: dict[str, Any] = {"name": "Permit2", "chainId": chain_id,
                              "verifyingContract": cs(contract)}
    domain_types = list(_DOMAIN_TYPES)
    if chain_id is None:
        del domain["chainId"]
        domain_types = [t for t in domain_types if t["name"] != "chainId"]
    return {
        "types": {
            "EIP712Domain": domain_types,
            "PermitSingle": [{"name": "details", "type": "PermitDetails"},
                             {"name": "spender", "type": "address"},
                             {"name": "sigDeadline", "type": "uint256"}],
            "PermitDetails": _PERMIT_DETAILS,
        },
        "primaryType": "PermitSingle",
        "domain": domain,
        "message": {"details": {"token": cs(USDC), "amount": str(amount),
                                "expiration": "1900000000", "nonce": "0"},
                    "spender": cs(spender), "sigDeadline": "1900000000"},
    }


def permit2_batch(spender: bytes, amounts: list[int]) -> dict[str, Any]:
    return {
        "types": {
            "EIP712Domain": _DOMAIN_TYPES,
            "PermitBatch": [{"name": "details", "type": "PermitDetails[]"},
                            {"name": "spender", "type": "address"},
                            {"name": "sigDeadline", "type": "uint256"}],
            "PermitDetails": _PERMIT_DETAILS,
        },
        "primaryType": "PermitBatch",
        "domain": {"name": "Permit2", "chainId": 1, "verifyingContract": cs(PERMIT2)},
        "message": {"details": [{"token": cs(t), "amount": a, "expiration": 1900000000,
                                 "nonce": 0} for t, a in zip([USDC, WETH, USDC], amounts)],
                    "spender": cs(spender), "sigDeadline": 1900000000},
    }


def permit2_batch_transfer(spender: bytes, amounts: list[int]) -> dict[str, Any]:
    return {
        "types": {
            "EIP712Domain": _DOMAIN_TYPES,
            "PermitBatchTransferFrom": [{"name": "permitted", "type": "TokenPermissions[]"},
                                        {"name": "spender", "type": "address"},
                                        {"name": "nonce", "type": "uint256"},
                                        {"name": "deadline", "type": "uint256"}],
            "TokenPermissions": [{"name": "token", "type": "address"},
                                 {"name": "amount", "type": "uint256"}],
        },
        "primaryType": "PermitBatchTransferFrom",
        "domain": {"name": "Permit2", "chainId": 8453, "verifyingContract": cs(PERMIT2)},
        "message": {"permitted": [{"token": cs(USDC), "amount": a} for a in amounts],
                    "spender": cs(spender), "nonce": 1, "deadline": 1900000000},
    }


def eip2612_permit(owner: bytes, spender: bytes, value: int, contract: bytes = USDC,
                   name: str = "USD Coin") -> dict[str, Any]:
    return {
        "types": {
            "EIP712Domain": [{"name": "name", "type": "string"},
                             {"name": "version", "type": "string"},
                             *_DOMAIN_TYPES[1:]],
            "Permit": [{"name": "owner", "type": "address"}, {"name": "spender", "type": "address"},
                       {"name": "value", "type": "uint256"}, {"name": "nonce", "type": "uint256"},
                       {"name": "deadline", "type": "uint256"}],
        },
        "primaryType": "Permit",
        "domain": {"name": name, "version": "2", "chainId": 1, "verifyingContract": cs(contract)},
        "message": {"owner": cs(owner), "spender": cs(spender), "value": hex(value),
                    "nonce": 0, "deadline": 1900000000},
    }


def typed(data: dict[str, Any]) -> TypedData:
    return load_typed_data(json.dumps(data))


SIWE = (b"app.example.com wants you to sign in with your Ethereum account:\n"
        + cs(SELF).encode() + b"\n\nURI: https://app.example.com\nVersion: 1\nChain ID: 1\n"
        b"Nonce: 32891756\nIssued At: 2021-09-30T16:25:24Z")


# --- the table -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    request: Any  # UnsignedTransaction | bytes (message) | dict (typed data JSON)
    allowed: bool
    reason: str  # the Decision's reason, exactly
    rule_id: str | None = None
    spends: tuple[tuple[str, int], ...] = ()


def _multicall3(kind: str, calls: list[tuple[bytes, int, bytes]], value: int = 0) -> UnsignedTransaction:
    if kind == "aggregate3Value":
        data = calldata(kind, [(cs(t), False, v, d) for t, v, d in calls])
    elif kind == "aggregate3":
        data = calldata(kind, [(cs(t), False, d) for t, _, d in calls])
    elif kind == "tryAggregate":
        data = calldata(kind, True, [(cs(t), d) for t, _, d in calls])
    else:
        data = calldata(kind, [(cs(t), d) for t, _, d in calls])
    return tx(MULTICALL3_ADDRESS, value, data)


P = "policy trader: "
NO_MATCH = P + "no allow rule matches: "
_usdc_to_attacker = transfer(ATTACKER, 10**6)
_dirty_address = bytes.fromhex("a9059cbb") + b"\xff" * 12 + TREASURY + (10**6).to_bytes(32, "big")

LEGITIMATE = [
    Case("0.1 ETH to the treasury", tx(TREASURY, ETHER // 10, gas_limit=21000), True,
         P + "allowed by rule eth-to-treasury", "eth-to-treasury",
         (("eth_daily", ETHER // 10), ("signatures", 1))),
    Case("legacy 0.1 ETH to the treasury on Base",
         tx(TREASURY2, ETHER // 10, type=0, chain_id=8453, gas_price=10**9,
            max_fee_per_gas=0, max_priority_fee_per_gas=0), True,
         P + "allowed by rule eth-to-treasury", "eth-to-treasury",
         (("eth_daily", ETHER // 10), ("signatures", 1))),
    Case("USDC to the treasury", tx(USDC, 0, transfer(TREASURY, 10**9)), True,
         P + "allowed by rule usdc-to-treasury", "usdc-to-treasury",
         (("usdc_daily", 10**9), ("signatures", 1))),
    Case("capped USDC approval to the router",
         tx(USDC, 0, calldata("approve", cs(ROUTER), 5 * 10**9)), True,
         P + "allowed by rule usdc-approve-router", "usdc-approve-router"),
    Case("swap paying the signer itself", tx(ROUTER, 0, swap(SELF)), True,
         P + "allowed by rule swap", "swap", (("eth_daily", 0), ("signatures", 1))),
    Case("two USDC transfers to the treasury in aggregate3",
         _multicall3("aggregate3", [(USDC, 0, transfer(TREASURY, 10**8)),
                                    (USDC, 0, transfer(TREASURY2, 2 * 10**8))]), True,
         P + "every call in aggregate3 is allowed (usdc-to-treasury, usdc-to-treasury)",
         "usdc-to-treasury", (("usdc_daily", 3 * 10**8), ("signatures", 2))),
    Case("ETH to both treasuries in aggregate3Value",
         _multicall3("aggregate3Value", [(TREASURY, ETHER // 10, b""),
                                         (TREASURY2, ETHER // 5, b"")], 3 * ETHER // 10), True,
         P + "every call in aggregate3Value is allowed (eth-to-treasury, eth-to-treasury)",
         "eth-to-treasury", (("eth_daily", 3 * ETHER // 10), ("signatures", 2))),
    Case("router multicall of a swap", tx(ROUTER, 0, calldata("multicall", [swap(SELF)])), True,
         P + "every call in multicall is allowed (swap)", "swap",
         (("eth_daily", 0), ("signatures", 1))),
    Case("7702 delegation to the approved batcher",
         tx(SELF, 0, type=4, authorization_list=(auth(BATCHER),)), True,
         P + "allowed by rule delegate-to-batcher", "delegate-to-batcher"),
    Case("sign-in with Ethereum", SIWE, True, P + "allowed by rule siwe", "siwe",
         (("signatures", 1),)),
    Case("Permit2 PermitSingle to the router", permit2_single(ROUTER, 10**9), True,
         P + "allowed by rule permit2-to-router", "permit2-to-router", (("usdc_daily", 10**9),)),
    Case("Permit2 PermitBatch, every entry capped", permit2_batch(ROUTER, [10**9, 5, 0]), True,
         P + "allowed by rule permit2-batch-to-router", "permit2-batch-to-router"),
    Case("Permit2 PermitBatchTransferFrom on Base", permit2_batch_transfer(ROUTER, [10**9, 1]),
         True, P + "allowed by rule permit2-transfer-to-router", "permit2-transfer-to-router"),
    Case("EIP-2612 permit to the router", eip2612_permit(SELF, ROUTER, 10**9), True,
         P + "allowed by rule usdc-permit-to-router", "usdc-permit-to-router"),
]

ATTACKS = [
    Case("all the ETH to a stranger", tx(ATTACKER, 50 * ETHER, gas_limit=21000), False,
         NO_MATCH + f"to {cs(ATTACKER)} not in @treasury (rule eth-to-treasury); "
         f"to {cs(ATTACKER)} not in {cs(USDC)} (rule usdc-to-treasury); "
         f"to {cs(ATTACKER)} not in {cs(USDC)} (rule usdc-approve-router); "
         f"to {cs(ATTACKER)} not in @routers (rule swap); "
         f"to {cs(ATTACKER)} not in $self (rule delegate-to-batcher)"),
    Case("all the ETH to the treasury, over value_max", tx(TREASURY, 50 * ETHER), False,
         NO_MATCH + "value 50000000000000000000 exceeds value_max 500000000000000000 "
         "(rule eth-to-treasury); "
         f"to {cs(TREASURY)} not in {cs(USDC)} (rule usdc-to-treasury); "
         f"to {cs(TREASURY)} not in {cs(USDC)} (rule usdc-approve-router); "
         f"to {cs(TREASURY)} not in @routers (rule swap); "
         f"to {cs(TREASURY)} not in $self (rule delegate-to-batcher)"),
    Case("approve of everything to an attacker", tx(USDC, 0, calldata("approve", cs(ATTACKER), MAX)),
         False, P + "denied by rule no-unlimited-approvals: approve(address,uint256), "
         f"amount {MAX} > 1000000000000", "no-unlimited-approvals"),
    Case("approve of everything to the router (deny wins)",
         tx(USDC, 0, calldata("approve", cs(ROUTER), MAX)), False,
         P + "denied by rule no-unlimited-approvals: approve(address,uint256), "
         f"amount {MAX} > 1000000000000", "no-unlimited-approvals"),
    Case("small approve to an attacker", tx(USDC, 0, calldata("approve", cs(ATTACKER), 10)),
         False, NO_MATCH + f"spender {cs(ATTACKER)} not in @routers (rule usdc-approve-router); "
         "selector 0x095ea7b3 is not transfer(address,uint256) (rule usdc-to-treasury); "
         f"to {cs(USDC)} not in @treasury (rule eth-to-treasury); "
         f"to {cs(USDC)} not in @routers (rule swap); "
         f"to {cs(USDC)} not in $self (rule delegate-to-batcher)"),
    Case("transferFrom the signer to an attacker",
         tx(USDC, 0, calldata("transferFrom", cs(SELF), cs(ATTACKER), 10**6)), False,
         NO_MATCH + "selector 0x23b872dd is not transfer(address,uint256) (rule usdc-to-treasury); "
         "selector 0x23b872dd is not approve(address,uint256) (rule usdc-approve-router); "
         f"to {cs(USDC)} not in @treasury (rule eth-to-treasury); "
         f"to {cs(USDC)} not in @routers (rule swap); "
         f"to {cs(USDC)} not in $self (rule delegate-to-batcher)"),
    Case("increaseAllowance to an attacker",
         tx(USDC, 0, calldata("increaseAllowance", cs(ATTACKER), MAX)), False,
         NO_MATCH + "selector 0x39509351 is not transfer(address,uint256) (rule usdc-to-treasury); "
         "selector 0x39509351 is not approve(address,uint256) (rule usdc-approve-router); "
         f"to {cs(USDC)} not in @treasury (rule eth-to-treasury); "
         f"to {cs(USDC)} not in @routers (rule swap); "
         f"to {cs(USDC)} not in $self (rule delegate-to-batcher)"),
    Case("setApprovalForAll to an attacker",
         tx(USDC, 0, calldata("setApprovalForAll", cs(ATTACKER), True)), False,
         NO_MATCH + "selector 0xa22cb465 is not transfer(address,uint256) (rule usdc-to-treasury); "
         "selector 0xa22cb465 is not approve(address,uint256) (rule usdc-approve-router); "
         f"to {cs(USDC)} not in @treasury (rule eth-to-treasury); "
         f"to {cs(USDC)} not in @routers (rule swap); "
         f"to {cs(USDC)} not in $self (rule delegate-to-batcher)"),
    Case("USDC to the treasury over the per-transfer cap",
         tx(USDC, 0, transfer(TREASURY, 10**9 + 1)), False,
         NO_MATCH + "amount 1000000001 exceeds 1000000000 (rule usdc-to-treasury); "
         "selector 0xa9059cbb is not approve(address,uint256) (rule usdc-approve-router); "
         f"to {cs(USDC)} not in @treasury (rule eth-to-treasury); "
         f"to {cs(USDC)} not in @routers (rule swap); "
         f"to {cs(USDC)} not in $self (rule delegate-to-batcher)"),
    Case("USDC transfer with dirty address padding", tx(USDC, 0, _dirty_address), False,
         NO_MATCH + "calldata does not decode exactly as transfer(address,uint256) "
         "(rule usdc-to-treasury); "
         "selector 0xa9059cbb is not approve(address,uint256) (rule usdc-approve-router); "
         f"to {cs(USDC)} not in @treasury (rule eth-to-treasury); "
         f"to {cs(USDC)} not in @routers (rule swap); "
         f"to {cs(USDC)} not in $self (rule delegate-to-batcher)"),
    Case("USDC transfer with trailing bytes", tx(USDC, 0, transfer(TREASURY, 1) + b"\x00" * 32),
         False, NO_MATCH + "calldata does not decode exactly as transfer(address,uint256) "
         "(rule usdc-to-treasury); "
         "selector 0xa9059cbb is not approve(address,uint256) (rule usdc-approve-router); "
         f"to {cs(USDC)} not in @treasury (rule eth-to-treasury); "
         f"to {cs(USDC)} not in @routers (rule swap); "
         f"to {cs(USDC)} not in $self (rule delegate-to-batcher)"),
    Case("swap paying an attacker", tx(ROUTER, 0, swap(ATTACKER)), False,
         NO_MATCH + f"params.recipient {cs(ATTACKER)} is not $self (rule swap); "
         f"to {cs(ROUTER)} not in @treasury (rule eth-to-treasury); "
         f"to {cs(ROUTER)} not in {cs(USDC)} (rule usdc-to-treasury); "
         f"to {cs(ROUTER)} not in {cs(USDC)} (rule usdc-approve-router); "
         f"to {cs(ROUTER)} not in $self (rule delegate-to-batcher)"),
    Case("a transfer hidden in aggregate3",
         _multicall3("aggregate3", [(USDC, 0, transfer(TREASURY, 10**6)),
                                    (USDC, 0, _usdc_to_attacker)]), False,
         P + f"aggregate3 call 1 to {cs(USDC)}: "
         f"no allow rule matches: to {cs(ATTACKER)} not in @treasury (rule usdc-to-treasury); "
         "selector 0xa9059cbb is not approve(address,uint256) (rule usdc-approve-router); "
         f"to {cs(USDC)} not in @treasury (rule eth-to-treasury); "
         f"to {cs(USDC)} not in @routers (rule swap); "
         f"to {cs(USDC)} not in $self (rule delegate-to-batcher)"),
    Case("an unlimited approve hidden in tryAggregate",
         _multicall3("tryAggregate", [(USDC, 0, calldata("approve", cs(ROUTER), MAX))]), False,
         P + f"tryAggregate call 0 to {cs(USDC)}: denied by rule no-unlimited-approvals: "
         f"approve(address,uint256), amount {MAX} > 1000000000000", "no-unlimited-approvals"),
    Case("ETH to an attacker hidden in aggregate3Value",
         _multicall3("aggregate3Value", [(TREASURY, 1, b""), (ATTACKER, ETHER, b"")],
                     ETHER + 1), False,
         P + f"aggregate3Value call 1 to {cs(ATTACKER)}: no allow rule matches: "
         f"to {cs(ATTACKER)} not in @treasury (rule eth-to-treasury); "
         f"to {cs(ATTACKER)} not in {cs(USDC)} (rule usdc-to-treasury); "
         f"to {cs(ATTACKER)} not in {cs(USDC)} (rule usdc-approve-router); "
         f"to {cs(ATTACKER)} not in @routers (rule swap); "
         f"to {cs(ATTACKER)} not in $self (rule delegate-to-batcher)"),
    Case("ETH left stranded in Multicall3", _multicall3("aggregate", [], ETHER), False,
         P + f"batch to {cs(MULTICALL3_ADDRESS)}: aggregate forwards no value: "
         f"{ETHER} wei would stay in Multicall3 for anyone to take"),
    Case("a transfer hidden in a router multicall",
         tx(ROUTER, 0, calldata("multicall", [swap(SELF), _usdc_to_attacker])), False,
         P + f"multicall call 1 to {cs(ROUTER)}: no allow rule matches: "
         "selector 0xa9059cbb is not exactInputSingle((address,address,uint24,address,uint256,"
         "uint256,uint256,uint160)) (rule swap); "
         f"to {cs(ROUTER)} not in @treasury (rule eth-to-treasury); "
         f"to {cs(ROUTER)} not in {cs(USDC)} (rule usdc-to-treasury); "
         f"to {cs(ROUTER)} not in {cs(USDC)} (rule usdc-approve-router); "
         f"to {cs(ROUTER)} not in $self (rule delegate-to-batcher)"),
    Case("chain-id swap to an unlisted chain", tx(TREASURY, ETHER // 10, chain_id=10), False,
         P + "chain_id 10 not in chains [1, 8453]"),
    Case("fee griefing: huge max_fee_per_gas * gas",
         tx(TREASURY, 1, gas_limit=30_000_000, max_fee_per_gas=10**12), False,
         P + "gas_limit * max_fee_per_gas = 30000000000000000000 wei exceeds "
         "max_gas_fee_wei 5000000000000000"),
    Case("contract creation", tx(b"", 0, b"\x60\x00"), False,
         NO_MATCH + 'contract creation needs a rule with to = "create" (rule eth-to-treasury); '
         'contract creation needs a rule with to = "create" (rule usdc-to-treasury); '
         'contract creation needs a rule with to = "create" (rule usdc-approve-router); '
         'contract creation needs a rule with to = "create" (rule swap); '
         'contract creation needs a rule with to = "create" (rule delegate-to-batcher)'),
    Case("7702 delegation to a sweeper",
         tx(SELF, 0, type=4, authorization_list=(auth(SWEEPER),)), False,
         NO_MATCH + f"authorization_list[0].address {cs(SWEEPER)} not in delegates "
         "(rule delegate-to-batcher); "
         f"to {cs(SELF)} not in @treasury (rule eth-to-treasury); "
         f"to {cs(SELF)} not in {cs(USDC)} (rule usdc-to-treasury); "
         f"to {cs(SELF)} not in {cs(USDC)} (rule usdc-approve-router); "
         f"to {cs(SELF)} not in @routers (rule swap)"),
    Case("7702 delegation smuggled next to ETH to the treasury",
         tx(TREASURY, 1, type=4, authorization_list=(auth(SWEEPER),)), False,
         NO_MATCH + "type 4 (EIP-7702) needs a rule with delegates (rule eth-to-treasury); "
         f"to {cs(TREASURY)} not in {cs(USDC)} (rule usdc-to-treasury); "
         f"to {cs(TREASURY)} not in {cs(USDC)} (rule usdc-approve-router); "
         f"to {cs(TREASURY)} not in @routers (rule swap); "
         f"to {cs(TREASURY)} not in $self (rule delegate-to-batcher)"),
    Case("7702 authorization with chain id 0",
         tx(SELF, 0, type=4, authorization_list=(auth(BATCHER, chain_id=0),)), False,
         P + "authorization_list[0].chain_id is 0: valid on every chain, never signed"),
    Case("7702 authorization for another chain",
         tx(SELF, 0, type=4, authorization_list=(auth(BATCHER, chain_id=8453),)), False,
         P + "authorization_list[0].chain_id 8453 is not the transaction's chain 1"),
    Case("Permit2 signature to an attacker spender", permit2_single(ATTACKER, 10**6), False,
         NO_MATCH + f"message.spender {cs(ATTACKER)} not in @routers (rule permit2-to-router); "
         "primaryType 'PermitSingle' is not PermitBatch (rule permit2-batch-to-router); "
         "primaryType 'PermitSingle' is not PermitBatchTransferFrom "
         "(rule permit2-transfer-to-router); "
         f"verifyingContract {cs(PERMIT2)} not in {cs(USDC)} (rule usdc-permit-to-router)"),
    Case("Permit2 unlimited to the router", permit2_single(ROUTER, 2**160 - 1), False,
         NO_MATCH + f"message.details.amount {2**160 - 1} exceeds 1000000000 "
         "(rule permit2-to-router); "
         "primaryType 'PermitSingle' is not PermitBatch (rule permit2-batch-to-router); "
         "primaryType 'PermitSingle' is not PermitBatchTransferFrom "
         "(rule permit2-transfer-to-router); "
         f"verifyingContract {cs(PERMIT2)} not in {cs(USDC)} (rule usdc-permit-to-router)"),
    Case("Permit2 batch: one benign entry, one unlimited",
         permit2_batch(ROUTER, [10**6, 2**160 - 1]), False,
         NO_MATCH + f"message.details.amount {2**160 - 1} exceeds 1000000000 "
         "(rule permit2-batch-to-router); "
         "primaryType 'PermitBatch' is not PermitSingle (rule permit2-to-router); "
         "primaryType 'PermitBatch' is not PermitBatchTransferFrom "
         "(rule permit2-transfer-to-router); "
         f"verifyingContract {cs(PERMIT2)} not in {cs(USDC)} (rule usdc-permit-to-router)"),
    Case("Permit2 signature for another chain", permit2_single(ROUTER, 1, chain_id=10), False,
         P + "domain chainId 10 not in chains [1, 8453]"),
    Case("Permit2 signature without a chain id", permit2_single(ROUTER, 1, chain_id=None), False,
         NO_MATCH + 'domain has no chainId (valid on every chain); needs chain_id = "none" '
         "(rule permit2-to-router); "
         'domain has no chainId (valid on every chain); needs chain_id = "none" '
         "(rule permit2-batch-to-router); "
         'domain has no chainId (valid on every chain); needs chain_id = "none" '
         "(rule permit2-transfer-to-router); "
         f"verifyingContract {cs(PERMIT2)} not in {cs(USDC)} (rule usdc-permit-to-router)"),
    Case("EIP-2612 permit from a fake contract named USD Coin",
         eip2612_permit(SELF, ROUTER, 1, contract=ATTACKER), False,
         NO_MATCH + f"verifyingContract {cs(ATTACKER)} not in {cs(PERMIT2)} "
         "(rule permit2-to-router); "
         f"verifyingContract {cs(ATTACKER)} not in {cs(PERMIT2)} (rule permit2-batch-to-router); "
         f"verifyingContract {cs(ATTACKER)} not in {cs(PERMIT2)} "
         "(rule permit2-transfer-to-router); "
         f"verifyingContract {cs(ATTACKER)} not in {cs(USDC)} (rule usdc-permit-to-router)"),
    Case("EIP-2612 permit of everything to an attacker", eip2612_permit(SELF, ATTACKER, MAX),
         False, NO_MATCH + f"message.spender {cs(ATTACKER)} not in @routers "
         "(rule usdc-permit-to-router); "
         f"verifyingContract {cs(USDC)} not in {cs(PERMIT2)} (rule permit2-to-router); "
         f"verifyingContract {cs(USDC)} not in {cs(PERMIT2)} (rule permit2-batch-to-router); "
         f"verifyingContract {cs(USDC)} not in {cs(PERMIT2)} (rule permit2-transfer-to-router)"),
    Case("sign-in for a phishing domain",
         SIWE.replace(b"app.example.com wants", b"app.examp1e.com wants"), False,
         NO_MATCH + "message does not match '^app\\\\.example\\\\.com wants you to sign in with "
         "your Ethereum a…' (rule siwe)"),
    Case("a message that is not UTF-8", b"\xff" + SIWE, False,
         P + "message is not UTF-8 text; no message rule matches it"),
]


# --- the same table over gRPC ----------------------------------------------------------------


def signing_request(case: Case, key_id: str) -> tuple[str, Any]:
    """The SignerService method and request that ask for exactly what `case` judges."""
    from signer.v1 import signer_pb2 as pb

    request = case.request
    if isinstance(request, UnsignedTransaction):
        return "SignTransaction", pb.SignTransactionRequest(
            key_id=key_id, transaction=proto_transaction(request))
    if isinstance(request, bytes):
        return "SignMessage", pb.SignMessageRequest(key_id=key_id, message=request)
    return "SignTypedData", pb.SignTypedDataRequest(key_id=key_id,
                                                    typed_data_json=json.dumps(request))


def proto_transaction(tx: UnsignedTransaction) -> Any:
    from signer.v1 import signer_pb2 as pb

    def quantity(value: int) -> str:
        return str(value) if value else ""

    return pb.Transaction(
        type=tx.type, chain_id=tx.chain_id, nonce=tx.nonce, to=cs(tx.to) if tx.to else "",
        value=quantity(tx.value), gas_limit=tx.gas_limit, gas_price=quantity(tx.gas_price),
        max_fee_per_gas=quantity(tx.max_fee_per_gas),
        max_priority_fee_per_gas=quantity(tx.max_priority_fee_per_gas), data=tx.data,
        authorization_list=[
            pb.Authorization(chain_id=a.chain_id, address=cs(a.address), nonce=a.nonce,
                             y_parity=a.y_parity, r=a.r.to_bytes(32, "big"),
                             s=a.s.to_bytes(32, "big"))
            for a in tx.authorization_list
        ],
    )
