"""Random policies and random transactions: the engine decides as a small reference model does.

The model below reads the TOML-shaped policy dict and the raw transaction fields directly and
decodes `transfer(address,uint256)` calldata by slicing bytes, sharing no code with the engine
or eth-abi. It covers the parts where an engine bug would be a drain: chains, the fee cap, `to`
(addresses, sets, $self, creation), value_max, exact calldata, `where` comparisons, deny-wins,
rule order and budget limits.
"""

from typing import Any

from eth_abi import encode
from eth_utils import keccak, to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from signer.eth.batch import MULTICALL3_ADDRESS
from signer.eth.transactions import UnsignedTransaction
from signer.policy import Policy, PolicyConfig

POOL = [bytes([i]) * 20 for i in (0x11, 0x22, 0x33, 0x44)]
SELF = b"\x55" * 20
TOKEN = b"\x66" * 20
TRANSFER = keccak(text="transfer(address,uint256)")[:4]
SMALL = [0, 1, 2, 5, 10, 100, 10**18, 2**256 - 1]
OPS = ["eq", "lte", "lt", "gte", "gt"]


def cs(address: bytes) -> str:
    return to_checksum_address(address)


# --- strategies ------------------------------------------------------------------------------

targets = st.one_of(
    st.none(),
    st.just("@treasury"),
    st.just("$self"),
    st.just("create"),
    st.sampled_from([*POOL, TOKEN]).map(cs),
    st.lists(st.sampled_from([*map(cs, POOL), "@treasury", "$self", "create"]), min_size=1,
             max_size=3),
)
amount_conditions = st.dictionaries(st.sampled_from(OPS), st.sampled_from(SMALL).map(str),
                                    min_size=1, max_size=2)
recipient_conditions = st.one_of(
    st.fixed_dictionaries({"in": st.just("@treasury")}),
    st.fixed_dictionaries({"eq": st.sampled_from([*map(cs, POOL), "$self"])}),
    st.fixed_dictionaries({"in": st.lists(st.sampled_from([*map(cs, POOL), "$self"]),
                                          min_size=1, max_size=2)}),
)
wheres = st.fixed_dictionaries({}, optional={"to": recipient_conditions,
                                             "amount": amount_conditions})


@st.composite
def allow_rules(draw: st.DrawFn, i: int) -> dict[str, Any]:
    rule: dict[str, Any] = {"id": f"a{i}"}
    if draw(st.booleans()):  # a token transfer rule
        rule["to"] = draw(st.sampled_from([cs(TOKEN), None]))
        rule["call"] = "transfer(address to,uint256 amount)"
        rule["where"] = draw(wheres)
        spend = draw(st.sampled_from([None, "amount", "value", "1"]))
    else:
        rule["to"] = draw(targets)
        spend = draw(st.sampled_from([None, "value", "1"]))
    if draw(st.booleans()):
        rule["value_max"] = str(draw(st.sampled_from(SMALL)))
    if spend is not None:
        rule["spend"] = {"budget": spend}
    return {k: v for k, v in rule.items() if v is not None}


@st.composite
def deny_rules(draw: st.DrawFn, i: int) -> dict[str, Any]:
    rule: dict[str, Any] = {"id": f"d{i}"}
    to = draw(st.sampled_from([None, cs(TOKEN), "@treasury", "create", *map(cs, POOL)]))
    if to is not None:
        rule["to"] = to
    if to != "create" and (draw(st.booleans()) or to is None):
        rule["call"] = "transfer(address to,uint256 amount)"
        rule["where"] = draw(wheres)
    return rule


@st.composite
def policies(draw: st.DrawFn) -> dict[str, Any]:
    n_allow = draw(st.integers(1, 4))
    n_deny = draw(st.integers(0, 2))
    return {
        "chains": [1, *draw(st.lists(st.sampled_from([10, 8453]), max_size=1))],
        "max_gas_fee_wei": str(draw(st.sampled_from([21000 * 10**9, 10**16, 10**18, 10**18]))),
        "sets": {"treasury": draw(st.lists(st.sampled_from(list(map(cs, POOL))), max_size=3,
                                           unique=True))},
        "budgets": {"budget": {"limit": str(draw(st.sampled_from([1, 100, 2**256 - 1]))),
                               "window": "1h"}},
        "allow": [draw(allow_rules(i)) for i in range(n_allow)],
        "deny": [draw(deny_rules(i)) for i in range(n_deny)],
    }


@st.composite
def calldatas(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["empty", "transfer", "transfer", "dirty", "short", "other"]))
    if kind == "empty":
        return b""
    recipient = draw(st.sampled_from([*POOL, SELF, SELF]))
    amount = draw(st.sampled_from(SMALL))
    body = TRANSFER + recipient.rjust(32, b"\0") + amount.to_bytes(32, "big")
    if kind == "dirty":
        return TRANSFER + b"\x01" + recipient.rjust(31, b"\0") + amount.to_bytes(32, "big")
    if kind == "short":
        return body[: draw(st.integers(0, len(body) - 1))]
    if kind == "other":
        return b"\x09\x5e\xa7\xb3" + body[4:]
    return body + (b"\0" * 32 if draw(st.booleans()) else b"")


@st.composite
def transactions(draw: st.DrawFn) -> UnsignedTransaction:
    tx_type = draw(st.sampled_from([0, 2]))
    fee = draw(st.sampled_from([10**9, 10**9, 10**11, 10**13]))
    fees = {"gas_price": fee} if tx_type == 0 else {"max_fee_per_gas": fee}
    return UnsignedTransaction(
        type=tx_type,
        chain_id=draw(st.sampled_from([1, 1, 1, 10, 8453])),
        nonce=0,
        to=draw(st.sampled_from([*POOL, TOKEN, TOKEN, TOKEN, SELF, b""])),
        value=draw(st.sampled_from([0, 0, 0, *SMALL])),
        gas_limit=draw(st.sampled_from([21000, 100_000, 100_000, 10**7])),
        data=draw(calldatas()),
        **fees,
    )


# --- the reference model ---------------------------------------------------------------------


def _address(text: str, policy: dict[str, Any]) -> set[bytes]:
    if text == "@treasury":
        return {bytes.fromhex(a[2:]) for a in policy["sets"]["treasury"]}
    if text == "$self":
        return {SELF}
    if text == "create":
        return {b""}
    return {bytes.fromhex(text[2:])}


def _targets(to: Any, policy: dict[str, Any]) -> set[bytes] | None:
    if to is None:
        return None
    found: set[bytes] = set()
    for item in [to] if isinstance(to, str) else to:
        found |= _address(item, policy)
    return found


def _transfer_args(data: bytes) -> tuple[bytes, int] | None:
    if len(data) != 68 or data[:4] != TRANSFER or data[4:16] != b"\0" * 12:
        return None
    return data[16:36], int.from_bytes(data[36:68], "big")


def _holds(where: dict[str, Any], args: tuple[bytes, int], policy: dict[str, Any]) -> bool:
    recipient, amount = args
    if "to" in where:
        cond = where["to"]
        if "eq" in cond and recipient not in _address(cond["eq"], policy):
            return False
        if "in" in cond:
            members: set[bytes] = set()
            for item in [cond["in"]] if isinstance(cond["in"], str) else cond["in"]:
                members |= _address(item, policy)
            if recipient not in members:
                return False
    for op, text in where.get("amount", {}).items():
        bound = int(text)
        if not {"eq": amount == bound, "lte": amount <= bound, "lt": amount < bound,
                "gte": amount >= bound, "gt": amount > bound}[op]:
            return False
    return True


def _global_checks(policy: dict[str, Any], tx: UnsignedTransaction) -> bool:
    return tx.chain_id in policy["chains"] and (
        tx.gas_limit * (tx.gas_price or tx.max_fee_per_gas) <= int(policy["max_gas_fee_wei"])
    )


def judge(policy: dict[str, Any], to: bytes, value: int, data: bytes
          ) -> tuple[bool, str | None, int | None]:
    """One call: (allowed, rule id, spend or None when the rule spends nothing)."""
    for rule in policy["deny"]:
        targets = _targets(rule.get("to"), policy)
        if targets is not None and to not in targets:
            continue
        if "call" in rule:
            if data[:4] != TRANSFER:
                continue
            args = _transfer_args(data)
            # undecodable calldata under a deny rule's selector: deny (fail closed)
            if args is not None and not _holds(rule["where"], args, policy):
                continue
        return False, rule["id"], None
    for rule in policy["allow"]:
        targets = _targets(rule.get("to"), policy)
        if to == b"":
            if targets is None or b"" not in targets:
                continue
        elif targets is not None and to not in targets:
            continue
        if value > int(rule.get("value_max", "0")):
            continue
        args = None
        if "call" in rule:
            args = _transfer_args(data)
            if args is None or not _holds(rule["where"], args, policy):
                continue
        elif data and to:
            continue
        source = rule.get("spend", {}).get("budget")
        spend = {"value": value, "amount": args[1] if args else 0, "1": 1}.get(source)
        return True, rule["id"], spend
    return False, None, None


def reference(policy: dict[str, Any], tx: UnsignedTransaction) -> tuple[bool, str | None, int | None]:
    """(allowed, rule id, budget spend)."""
    if not _global_checks(policy, tx):
        return False, None, None
    allowed, rule_id, spend = judge(policy, tx.to, tx.value, tx.data)
    if allowed and spend is not None and spend > int(policy["budgets"]["budget"]["limit"]):
        return False, rule_id, None
    return allowed, rule_id, spend


@settings(max_examples=800, deadline=None)
@given(policy=policies(), tx=transactions())
def test_engine_decides_like_the_reference_model(policy: dict[str, Any], tx: UnsignedTransaction):
    engine = Policy.compile("p", PolicyConfig.model_validate(policy))
    decision = engine.evaluate(tx, SELF)
    allowed, rule_id, spend = reference(policy, tx)
    assert (decision.allowed, decision.rule_id) == (allowed, rule_id), decision.reason
    assert decision.reason.startswith("policy p: ")
    assert decision.spends == ((("budget", spend),) if allowed and spend is not None else ())


# --- batches: every inner call on its own ----------------------------------------------------

AGGREGATE3VALUE = keccak(text="aggregate3Value((address,bool,uint256,bytes)[])")[:4]


@st.composite
def batches(draw: st.DrawFn) -> tuple[UnsignedTransaction, list[tuple[bytes, int, bytes]]]:
    inner = draw(st.lists(st.tuples(st.sampled_from([*POOL, TOKEN, TOKEN, TOKEN]),
                                    st.sampled_from([0, 0, 0, 1, 10**18]), calldatas()),
                          min_size=1, max_size=3))
    data = AGGREGATE3VALUE + encode(["(address,bool,uint256,bytes)[]"],
                                    [[(t, False, v, d) for t, v, d in inner]])
    tx = UnsignedTransaction(type=2, chain_id=1, nonce=0, to=MULTICALL3_ADDRESS,
                             value=sum(v for _, v, _ in inner), gas_limit=21_000,
                             max_fee_per_gas=10**9, data=data)
    return tx, inner


def reference_batch(policy: dict[str, Any], tx: UnsignedTransaction,
                    inner: list[tuple[bytes, int, bytes]]) -> tuple[bool, str | None, int | None]:
    if not _global_checks(policy, tx):
        return False, None, None
    ids, total, spent = [], 0, False
    for to, value, data in inner:
        allowed, rule_id, spend = judge(policy, to, value, data)
        if not allowed:
            return False, rule_id, None
        ids.append(rule_id)
        if spend is not None:
            total, spent = total + spend, True
    rule_id = ",".join(dict.fromkeys(ids))
    if spent and total > int(policy["budgets"]["budget"]["limit"]):
        return False, rule_id, None
    return True, rule_id, total if spent else None


@settings(max_examples=300, deadline=None)
@given(policy=policies(), batch=batches())
def test_batches_decide_like_the_reference_model(policy: dict[str, Any], batch):
    tx, inner = batch
    decision = Policy.compile("p", PolicyConfig.model_validate(policy)).evaluate(tx, SELF)
    allowed, rule_id, spend = reference_batch(policy, tx, inner)
    assert (decision.allowed, decision.rule_id) == (allowed, rule_id), decision.reason
    assert decision.spends == ((("budget", spend),) if allowed and spend is not None else ())


# --- typed data: Permit2 batches against caps, every element / any element -------------------

ROUTERS = POOL[:2]


@settings(max_examples=200, deadline=None)
@given(amounts=st.lists(st.sampled_from([0, 1, 999, 1000, 1001, 2**160 - 1]), max_size=4),
       spender=st.sampled_from(POOL), chain=st.sampled_from([1, 10]),
       cap=st.sampled_from([0, 1000, 2**160 - 1]), deny_over=st.sampled_from([None, 1000]),
       contract=st.sampled_from([TOKEN, SELF]))
def test_permit_batches_are_judged_on_every_entry(amounts, spender, chain, cap, deny_over,
                                                  contract):
    from tests.support.policy_cases import permit2_batch_transfer, typed

    policy: dict[str, Any] = {
        "chains": [1],
        "sets": {"routers": [cs(r) for r in ROUTERS]},
        "allow": [{"id": "permit", "kind": "typed_data",
                   "domain": {"verifying_contract": cs(TOKEN)},
                   "primary_type": "PermitBatchTransferFrom",
                   "where": {"message.spender": {"in": "@routers"},
                             "message.permitted.amount": {"lte": str(cap)}}}],
    }
    if deny_over is not None:
        policy["deny"] = [{"id": "big", "kind": "typed_data",
                           "where": {"message.permitted.amount": {"gt": str(deny_over)}}}]
    data = permit2_batch_transfer(spender, amounts)
    data["domain"].update(chainId=chain, verifyingContract=cs(contract))
    decision = Policy.compile("p", PolicyConfig.model_validate(policy)).evaluate(typed(data), SELF)

    denied_by_rule = deny_over is not None and any(a > deny_over for a in amounts)
    allowed = (chain == 1 and not denied_by_rule and contract == TOKEN
               and spender in ROUTERS and all(a <= cap for a in amounts))
    assert decision.allowed is allowed, decision.reason
    assert decision.rule_id == ("permit" if allowed else "big" if chain == 1 and denied_by_rule
                                else None)
