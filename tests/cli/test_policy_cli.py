"""`wallet-signer policy check` and `policy budgets` against a config file and its store."""

import json
from pathlib import Path

from signer import cli
from signer.app.audit import verify
from signer.store import open_store

TREASURY = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
STRANGER = "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB"
SELF = "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf"


def config(tmp_path: Path) -> Path:
    path = tmp_path / "signer.toml"
    path.write_text(f"""
[server]
tls_cert_file = "/unused/server.crt"
tls_key_file = "/unused/server.key"
client_ca_file = "/unused/ca.crt"
[store]
url = "sqlite://{tmp_path / 'state.db'}"
[keys.hot]
backend = "env"
private_key_env = "UNUSED"
[clients.trader]
identity = "spiffe://prod/agents/trader"
keys = ["hot"]
policy = "trader"
[clients.monitor]
identity = "monitor"
keys = ["*"]
methods = ["ListKeys"]
[policies.trader]
chains = [1]
max_gas_fee_wei = "5000000000000000"
sets = {{ treasury = ["{TREASURY}"] }}
budgets.eth_daily = {{ limit = "2000000000000000000", window = "24h" }}
[[policies.trader.allow]]
id = "eth-to-treasury"
to = "@treasury"
value_max = "500000000000000000"
spend = {{ eth_daily = "value" }}
[[policies.trader.allow]]
id = "siwe"
kind = "message"
match = '^app\\.example\\.com wants you to sign in'
""")
    return path


def tx_file(tmp_path: Path, to: str, value: int) -> Path:
    path = tmp_path / "tx.json"
    path.write_text(json.dumps({"type": 2, "chainId": 1, "nonce": 0, "to": to, "value": value,
                                "gas": 21000, "maxFeePerGas": 10**10,
                                "maxPriorityFeePerGas": 10**9, "from": SELF}))
    return path


def test_policy_check_explains_and_is_audited(tmp_path, capsys):
    cfg = str(config(tmp_path))
    assert cli.main(["policy", "check", "--config", cfg, "--client", "trader",
                     "--tx", str(tx_file(tmp_path, TREASURY, 10**17))]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "allowed (rule eth-to-treasury)"
    assert out[2] == ("budget eth_daily: 0 of 2000000000000000000 spent in the last 86400 s; "
                      "this request spends 100000000000000000")
    assert cli.main(["policy", "check", "--config", cfg, "--client", "trader",
                     "--tx", str(tx_file(tmp_path, STRANGER, 10**17))]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "denied"
    assert out[1].startswith(f"policy trader: no allow rule matches: to {STRANGER} not in "
                             "@treasury (rule eth-to-treasury)")
    assert cli.main(["policy", "check", "--config", cfg, "--client", "trader", "--message",
                     "app.example.com wants you to sign in with your Ethereum account"]) == 0
    assert capsys.readouterr().out.startswith("allowed (rule siwe)")
    assert cli.main(["policy", "check", "--config", cfg, "--client", "nobody", "--message",
                     "x"]) == 2
    assert "--client: no client named 'nobody' (clients: monitor, trader)" in (
        capsys.readouterr().err)
    store = open_store(f"sqlite://{tmp_path / 'state.db'}")
    try:
        dry_runs = [json.loads(r.body) for w in store.writers() for r in store.audit_rows(w)
                    if json.loads(r.body)["kind"] == "dry_run"]
        assert [(d["decision"], d["rule_id"]) for d in dry_runs] == [
            ("allow", "eth-to-treasury"), ("deny", None), ("allow", "siwe")]
        assert verify(store).ok
    finally:
        store.close()


def test_policy_budgets_lists_every_budget(tmp_path, capsys):
    cfg = str(config(tmp_path))
    assert cli.main(["policy", "budgets", "--config", cfg]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "trader\ttrader\teth_daily\t0/2000000000000000000\t86400s"]
    assert cli.main(["policy", "budgets", "--config", cfg, "--client", "monitor"]) == 0
    assert capsys.readouterr().out.strip() == "no client has a policy with budgets"


def test_policy_check_explains_an_authorization(tmp_path, capsys):
    delegate = "0x63c0c19a282a1B52b07dD5a65b58948A07DAE32B"
    path = config(tmp_path)
    path.write_text(path.read_text().replace(
        'policy = "trader"', 'policy = "trader"\nmethods = ["SignTransaction", "SignAuthorization"]'
    ) + f'''
[[policies.trader.allow]]
id = "wallet"
kind = "authorization"
delegates = ["{delegate}"]
''')
    auth = tmp_path / "auth.json"
    args = ["policy", "check", "--config", str(path), "--client", "trader", "--authorization",
            str(auth), "--address", SELF]
    auth.write_text(json.dumps({"chainId": 1, "address": delegate, "nonce": "0x5"}))
    assert cli.main(args) == 0
    assert capsys.readouterr().out.splitlines()[:2] == [
        "allowed (rule wallet)", f"policy trader: allowed by rule wallet: delegate {delegate} "
                                 "on chain_id 1"]
    auth.write_text(json.dumps({"chainId": 0, "address": delegate, "nonce": 5}))
    assert cli.main(args) == 1
    assert capsys.readouterr().out.splitlines()[1] == (
        "policy trader: no allow rule matches: chain_id 0 (valid on every chain) needs "
        "allow_any_chain = true (rule wallet)")
    auth.write_text(json.dumps({"chainId": 1, "address": "0x12", "nonce": 5}))
    assert cli.main(args) == 2
    assert "address: expected a 0x-prefixed 20-byte hex address" in capsys.readouterr().err
