"""The container image, run as operators run it: `make test-image` builds it and runs this.

One production container (podman, runc, rootful) with its config, TLS material and PIN mounted
read-only, the state volume read-write (the embedded store and, for this test, the SoftHSM token:
a real PKCS#11 token made here, holding a key imported here), the image's non-root user and a
read-only root filesystem. It must pass its own HEALTHCHECK under mTLS, sign over mTLS from the
host with RemoteAccount, and no private key, PIN or TLS key may be in any layer of the image.
Skipped unless WALLET_SIGNER_IMAGE names a built image (a failure when
WALLET_SIGNER_REQUIRE_BACKENDS contains "image", as `make test-image` sets).
"""

import datetime as dt
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import rlp
from eth_account import Account
from eth_utils import to_checksum_address

from signer.client import RemoteAccount
from tests.conftest import skip_or_fail
from tests.support.tls_certs import CertificateAuthority, Issued

IMAGE_ENV = "WALLET_SIGNER_IMAGE"
ROOT = Path(__file__).resolve().parents[2]
SETUP_TOKEN = ROOT / "softhsm" / "setup-token.sh"
SIGNER_UID = 10001  # the Dockerfile's `signer` user
TOKEN = "image-token"
TRADER = "spiffe://image-test/agents/trader"
TREASURY = to_checksum_address("0x" + "7e" * 20)
# where the container sees what the test mounts
ETC, TLS, PINS, STATE = (
    "/etc/wallet-signer", "/run/secrets/wallet-signer-tls", "/run/secrets/wallet-signer-pin",
    "/var/lib/wallet-signer",
)
# What podman needs on these machines (docs/deploy/image.md): runc (crun, when installed, refuses
# their cgroup v1 set-up), explicit limits (runc cannot apply the inherited ones) and, without
# systemd, no HEALTHCHECK timer: the test runs the check itself.
RUN_FLAGS = ("--runtime", "runc", "--network=host", "--ulimit", "nofile=4096:4096",
             "--ulimit", "nproc=4096:4096", "--health-interval=disable")
STARTUP_SECONDS = 120  # generous: CI's 2 cores may be busy


@dataclass
class Secrets:
    private_key: bytes
    pins: list[str]
    tls_keys: list[Issued]


@dataclass
class Container:
    name: str
    target: str
    ca: Path
    trader: Issued
    probe: Issued  # the HEALTHCHECK's certificate
    secrets: Secrets
    startup_seconds: float


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout,
                          check=check, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def image() -> str:
    name = os.environ.get(IMAGE_ENV, "")
    if not name:
        skip_or_fail("image", f"{IMAGE_ENV} is not set: run `make test-image`")
    if shutil.which("podman") is None or os.geteuid() != 0:
        skip_or_fail("image", "needs podman and root (`make test-image` installs podman)")
    if podman("image", "exists", name, check=False).returncode != 0:
        skip_or_fail("image", f"no image {name}: run `make image`")
    return name


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def owned_by_signer(path: Path, mode: int) -> None:
    os.chown(path, SIGNER_UID, SIGNER_UID)
    path.chmod(mode)


def make_token(tmp_path: Path, state: Path, private_key: str) -> list[str]:
    """A SoftHSM token holding `private_key` as "hot", moved into the state volume; returns the
    user and SO PINs (the user PIN file is left in tmp_path/hsm/user-pin)."""
    hsm = tmp_path / "hsm"
    subprocess.run(["bash", str(SETUP_TOKEN), str(hsm), TOKEN], check=True, capture_output=True,
                   timeout=60)
    key_file = tmp_path / "hot.key"
    key_file.write_text(private_key)
    key_file.chmod(0o600)
    subprocess.run(
        [str(Path(sys.executable).with_name("wallet-signer")), "keys", "import", "--backend", "pkcs11", "--label",
         "hot", "--token-label", TOKEN, "--pin-file", str(hsm / "user-pin"),
         "--key-file", str(key_file)],
        check=True, capture_output=True, timeout=60,
        env={**os.environ, "SOFTHSM2_CONF": str(hsm / "softhsm2.conf")},
    )
    key_file.unlink()
    shutil.move(hsm / "tokens", state / "softhsm" / "tokens")
    return [(hsm / "user-pin").read_text().strip(), (hsm / "so-pin").read_text().strip()]


CONFIG = """\
environment = "production"

[server]
listen = "{listen}"
tls_cert_file = "{tls}/server.crt"
tls_key_file = "{tls}/server.key"
client_ca_file = "{tls}/ca.crt"

[keys.hot]
backend = "pkcs11"
token_label = "{token}"
key_label = "hot"
pin_file = "{pins}/user-pin"

[clients.trader]
identity = "{trader}"
keys = ["hot"]
policy = "trader"

[policies.trader]
chains = [1]
max_gas_fee_wei = "1000000000000000"

[[policies.trader.allow]]
id = "pay-treasury"
to = "{treasury}"
value_max = "1000000000000000000"
"""


@pytest.fixture(scope="module")
def container(image: str, tmp_path_factory: pytest.TempPathFactory,
              request: pytest.FixtureRequest) -> Iterator[Container]:
    tmp_path = tmp_path_factory.mktemp("image")
    etc, tls, pins, state = (tmp_path / n for n in ("etc", "tls", "pins", "state"))
    for directory in (etc, tls, pins, state, state / "softhsm"):
        directory.mkdir()
    account = Account.create()
    private_key = bytes(account.key)
    token_pins = make_token(tmp_path, state, "0x" + private_key.hex())
    shutil.copy(tmp_path / "hsm" / "user-pin", pins / "user-pin")

    (tmp_path / "pki").mkdir()
    ca = CertificateAuthority(tmp_path / "pki", "image test CA")
    server = ca.server()
    trader = ca.issue("trader", uris=(TRADER,))
    probe = ca.issue("healthcheck", cn="healthcheck")  # identifies no client: health only
    for name, issued in (("server", server), ("health", probe)):
        shutil.copy(issued.cert_file, tls / f"{name}.crt")
        shutil.copy(issued.key_file, tls / f"{name}.key")
    shutil.copy(ca.cert_file, tls / "ca.crt")

    port = free_port()
    (etc / "config.toml").write_text(CONFIG.format(
        listen=f"127.0.0.1:{port}", tls=TLS, pins=PINS, token=TOKEN, trader=TRADER,
        treasury=TREASURY))
    (etc / "softhsm2.conf").write_text(
        f"directories.tokendir = {STATE}/softhsm/tokens\nobjectstore.backend = file\n"
        "log.level = ERROR\nslots.removable = false\n")
    # As a Secret volume would present them: readable by the signer user only, mounted read-only.
    for directory in (etc, tls, pins):
        owned_by_signer(directory, 0o500)
        for path in directory.iterdir():
            owned_by_signer(path, 0o400)
    for path in [state, *state.rglob("*")]:
        owned_by_signer(path, 0o700 if path.is_dir() else 0o600)

    name = f"wallet-signer-test-{os.getpid()}"
    started = time.monotonic()
    podman(
        "run", "--detach", "--name", name, *RUN_FLAGS, "--read-only",
        "-v", f"{etc}:{ETC}:ro", "-v", f"{tls}:{TLS}:ro", "-v", f"{pins}:{PINS}:ro",
        "-v", f"{state}:{STATE}",
        "-e", f"SOFTHSM2_CONF={ETC}/softhsm2.conf",
        "-e", f"WALLET_SIGNER_HEALTH_SERVER=127.0.0.1:{port}",
        "-e", f"WALLET_SIGNER_HEALTH_TLS_CA={TLS}/ca.crt",
        "-e", f"WALLET_SIGNER_HEALTH_TLS_CERT={TLS}/health.crt",
        "-e", f"WALLET_SIGNER_HEALTH_TLS_KEY={TLS}/health.key",
        image,
    )
    try:
        deadline = started + STARTUP_SECONDS
        while True:
            try:
                check = podman("healthcheck", "run", name, check=False, timeout=30)
            except subprocess.TimeoutExpired as exc:  # a loaded machine: try again until deadline
                check = subprocess.CompletedProcess(exc.cmd, -1, "", "podman timed out\n")
            if check.returncode == 0:
                break
            state_ = podman("inspect", "--format", "{{.State.Status}}", name).stdout.strip()
            if state_ != "running" or time.monotonic() > deadline:
                logs = podman("logs", name, check=False)
                health = podman("exec", name, "wallet-signer", "health", check=False)
                pytest.fail(f"container {state_}, healthcheck {check.stdout}{check.stderr}: "
                            f"{health.stdout}{health.stderr}\n{logs.stdout}{logs.stderr}")
            time.sleep(0.5)
        startup = time.monotonic() - started
        print(f"\nimage {image}: `podman run` to a passing HEALTHCHECK under mTLS in "
              f"{startup:.1f} s; {serving_after(name)}")
        yield Container(name, f"127.0.0.1:{port}", tls / "ca.crt", trader, probe,
                        Secrets(private_key, token_pins, [server, trader, probe]), startup)
    finally:
        if request.session.testsfailed:  # the server's side of a failure, before it is gone
            logs = podman("logs", name, check=False)
            print(f"\n--- {name} log ---\n{logs.stdout}{logs.stderr}")
        podman("rm", "--force", "--time", "5", name, check=False, timeout=60)


def serving_after(name: str) -> str:
    """How long the process took from the container's start to its "SERVING" log line."""
    started_at = podman("inspect", "--format", "{{.State.StartedAt}}", name).stdout.strip()
    logs = podman("logs", name).stderr.splitlines()
    serving = [json.loads(line)["time"] for line in logs if "SERVING" in line]
    # podman prints Go's time format, e.g. 2026-12-04 20:32:31.91234 +0000 UTC (zeros trimmed)
    parts = re.match(r"(\S+ [\d:]+)(?:\.(\d+))? ([+-]\d{4})", started_at)
    assert parts, started_at
    fraction = (parts[2] or "0")[:6].ljust(6, "0")
    start = dt.datetime.strptime(f"{parts[1]}.{fraction} {parts[3]}", "%Y-%m-%d %H:%M:%S.%f %z")
    if not serving:
        return "no SERVING line in the log"
    seconds = (dt.datetime.fromisoformat(serving[0]) - start).total_seconds()
    return f"container start to SERVING in the log: {seconds:.1f} s"


def test_the_healthcheck_passes_under_mtls_and_only_with_a_client_certificate(container):
    passed = podman("exec", container.name, "wallet-signer", "health")
    assert passed.stdout == f"{container.target}: SERVING\n"
    without = podman("exec", "-e", "WALLET_SIGNER_HEALTH_TLS_CERT=", "-e",
                     "WALLET_SIGNER_HEALTH_TLS_KEY=", container.name, "wallet-signer", "health",
                     check=False)
    assert (without.returncode, without.stderr) == (1, f"{container.target}: UNAVAILABLE\n")
    # the check's certificate names no client: it reads health and nothing else
    with pytest.raises(grpc.RpcError) as refused:
        RemoteAccount.connect(container.target, "hot", tls_ca=container.ca,
                              tls_cert=container.probe.cert_file,
                              tls_key=container.probe.key_file)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert container.startup_seconds < STARTUP_SECONDS


def test_signs_over_mtls_from_the_host_with_the_key_in_the_token(container):
    trader = container.trader
    account = RemoteAccount.connect(container.target, "hot", tls_ca=container.ca,
                                    tls_cert=trader.cert_file, tls_key=trader.key_file)
    expected = Account.from_key(container.secrets.private_key).address
    assert account.address == expected
    tx = {"chainId": 1, "nonce": 0, "to": TREASURY, "value": 10**15, "gas": 21000,
          "maxFeePerGas": 2 * 10**9, "maxPriorityFeePerGas": 10**9, "data": b""}
    signed = account.sign_transaction(tx)
    assert Account.recover_transaction(signed.raw_transaction) == expected
    # the fields signed are the ones eth-account signs from the key (all but y_parity, r, s)
    reference = Account.sign_transaction(tx, container.secrets.private_key)
    assert signed.raw_transaction[0] == reference.raw_transaction[0] == 2
    fields, reference_fields = (rlp.decode(bytes(raw[1:])) for raw in
                                (signed.raw_transaction, reference.raw_transaction))
    assert len(fields) == 12 and fields[:9] == reference_fields[:9]


def test_runs_as_the_non_root_user_on_a_read_only_root_filesystem(container):
    status = podman("exec", container.name, "cat", "/proc/1/status").stdout
    uids = re.search(r"^Uid:\s+(\d+)\s+(\d+)", status, re.M)
    assert uids and uids.groups() == (str(SIGNER_UID), str(SIGNER_UID))
    assert podman("exec", container.name, "cat", "/proc/1/cmdline").stdout.split("\0")[1:3] == [
        "/opt/wallet-signer/bin/wallet-signer", "serve"]
    inspect = podman("inspect", "--format", "{{.HostConfig.ReadonlyRootfs}}", container.name)
    assert inspect.stdout.strip() == "true"
    for path in ("/opt/wallet-signer/injected", "/etc/injected", f"{ETC}/injected"):
        write = podman("exec", container.name, "touch", path, check=False)
        assert write.returncode == 1 and "Read-only file system" in write.stderr, path
    # the state volume is where writes go: the embedded store is there
    ls = podman("exec", container.name, "ls", STATE).stdout.split()
    assert "state.db" in ls and "softhsm" in ls


def test_no_private_key_pin_or_tls_key_is_in_any_layer(container, image, tmp_path):
    secrets = container.secrets
    needles = {"private key (raw)": secrets.private_key,
               "private key (hex)": secrets.private_key.hex().encode()}
    for i, pin in enumerate(secrets.pins):
        needles[f"PIN {i}"] = pin.encode()
    for issued in secrets.tls_keys:
        first_line = issued.key_pem.splitlines()[1]  # found even in a PEM with other line ends
        assert len(first_line) == 64
        needles[f"TLS key {issued.cert_file.stem} (PEM)"] = issued.key_pem
        needles[f"TLS key {issued.cert_file.stem} (first line)"] = first_line
    control = b"WALLET_SIGNER_HEALTH_"  # in signer/cli.py: proves the search reads the layers
    archive = tmp_path / "image.tar"
    try:
        podman("save", "--format", "docker-archive", "-o", str(archive), image, timeout=240)
        found: dict[str, list[str]] = {}
        layers = 0
        with tarfile.open(archive) as outer:
            for member in outer:
                if not member.isfile():
                    continue
                stream = outer.extractfile(member)
                assert stream is not None
                is_layer = member.name.endswith(".tar")
                layers += is_layer
                head = stream.read(512)
                if is_layer:  # an uncompressed tar, or the search below would see nothing
                    assert head[257:262] == b"ustar", member.name
                for label in search(head, stream, {**needles, "control": control}):
                    found.setdefault(label, []).append(member.name)
    finally:
        archive.unlink(missing_ok=True)
    assert layers >= 2
    assert "control" in found
    assert {k: v for k, v in found.items() if k != "control"} == {}


def search(head: bytes, stream, needles: dict[str, bytes], chunk: int = 8 << 20) -> set[str]:
    """Labels of the needles found anywhere in head + the rest of stream (read in chunks that
    overlap by the longest needle, so nothing is missed at a boundary)."""
    overlap = max(len(n) for n in needles.values())
    found: set[str] = set()
    window = head
    while True:
        block = stream.read(chunk)
        window += block
        found |= {label for label, needle in needles.items() if needle in window}
        if not block:
            return found
        window = window[-overlap:]
