"""`python -m bench soak --minutes N` (not in CI): a saturating, mixed load on every backend.

One `wallet-signer serve` process (as operators run it: durable audit on SQLite) holds three
keys: "env", "hsm" (a throwaway SoftHSM token) and "kms" (the moto KMS emulator over HTTP).
Sixteen closed-loop callers in this process send, at random: valid unary SignTransaction on
every key, SignTransactions streams mixing valid and invalid requests, invalid requests (each
with the one status it must get), undecodable bytes, calls with deadlines too short to make,
and SignMessage/GetAddress/ListKeys. Every 20 s the emulator's fault switches: throttling,
5xx, a disabled key, access denied, 2 s of added latency, or none.

Every answer is checked against the statuses its request may get; anything else is unexpected
(printed with its details). The server process's RSS, open fds and threads are sampled every
5 s; the summary compares the end with the state after warm-up (one whole fault cycle, 2
minutes, or a tenth of the run if longer: allocator arenas and caches fill, and connections to
the emulator open): pass when there are 0 unexpected statuses, RSS grew less than 5%, fds did
not grow, the service's own threads are the same from the first sample to the last, and grpc
core's threads stayed within GRPC_CORE_THREAD_BOUND. The server's own pools (gRPC workers, the
KMS call pool, the stream sweeper, health) start all their threads at start-up (signer.pools),
so any growth of theirs is a leak. grpc core's EventEngine pool adds a thread when all of its
own are busy and never ends it (grpc/grpc#41169; grpcio has no setting to bound it): seen going
from 4 to 5 in a 30-minute run, so it is held to a bound instead of to "no growth". The exit status is 0 on pass,
1 otherwise; every wait is bounded, so it can run unattended.
"""

import argparse
import os
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from signer.v1 import signer_pb2 as pb
from signer.v1 import signer_pb2_grpc as pb_grpc

CALLERS = 16
KEY = "0x" + "46" * 32
TO = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
FAULT_SECONDS = 20.0
SAMPLE_SECONDS = 5.0
# grpc core's own threads (EventEngine pool, timers, resolver) may reach this many: it starts
# with 4 here and was seen at 5 after 30 minutes; twice that, for a replica with more cores
# (the pool starts with one thread per core), is where growth stops being a pool and becomes a leak
GRPC_CORE_THREAD_BOUND = max(10, 2 * (os.cpu_count() or 1) + 6)
OK = grpc.StatusCode.OK
# What a KMS call may answer while the emulator injects faults (and what each fault maps to).
KMS_FAULTED = {OK, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.FAILED_PRECONDITION,
               grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.DEADLINE_EXCEEDED}
FAULTS: list[dict[str, Any] | None] = [
    None,
    {"error": "ThrottlingException"},
    {"error": "KMSInternalException", "status": 500},
    {"error": "KMSInvalidStateException"},
    {"error": "AccessDeniedException"},
    {"latency": 2.0},
]
KMS_TIMEOUT = 1.0  # callers' deadline for KMS keys: the latency fault exceeds it


def _tx(nonce: int, **fields: Any) -> pb.Transaction:
    base: dict[str, Any] = {"type": 2, "chain_id": 1, "nonce": nonce, "to": TO, "value": "1",
                            "gas_limit": 21000, "max_fee_per_gas": "30000000000",
                            "max_priority_fee_per_gas": "1000000000"}
    base.update(fields)
    return pb.Transaction(**base)


INVALID = grpc.StatusCode.INVALID_ARGUMENT
BAD: list[tuple[str, pb.SignTransactionRequest, grpc.StatusCode]] = [
    ("bad address", pb.SignTransactionRequest(key_id="env", transaction=_tx(0, to="0x1234")),
     INVALID),
    ("chain_id 0", pb.SignTransactionRequest(key_id="hsm", transaction=_tx(0, chain_id=0)),
     INVALID),
    ("value too big", pb.SignTransactionRequest(key_id="kms", transaction=_tx(0, value=str(2**256))),
     INVALID),
    ("blob type", pb.SignTransactionRequest(key_id="env", transaction=_tx(0, type=3)), INVALID),
    ("malformed RLP", pb.SignTransactionRequest(key_id="hsm", unsigned_transaction=b"\x02\xc2\x81\x05"),
     INVALID),
    ("unknown key", pb.SignTransactionRequest(key_id="cold", transaction=_tx(0)),
     grpc.StatusCode.NOT_FOUND),
]
KEYS = ("env", "hsm", "kms")


@dataclass(frozen=True)
class Sample:
    at: float
    rss_kib: int
    fds: int
    threads: int
    kinds: Counter[str]  # threads by their kernel name: "python" (ours), grpc core's own

    @property
    def kinds_text(self) -> str:
        return ", ".join(f"{name} {n}" for name, n in self.kinds.most_common())


def sample(pid: int) -> Sample:
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                  if ":" in line)
    kinds: Counter[str] = Counter()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            kinds[(task / "comm").read_text().strip().rstrip("0123456789").rstrip("_")] += 1
        except OSError:  # the thread ended meanwhile
            pass
    return Sample(time.monotonic(), int(status["VmRSS"].split()[0]),
                  len(os.listdir(f"/proc/{pid}/fd")), int(status["Threads"]), kinds)


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_status: Counter[tuple[str, str]] = Counter()  # (scenario, status) -> count
        self.unexpected: Counter[tuple[str, str]] = Counter()
        self.examples: dict[tuple[str, str], str] = {}

    def record(self, scenario: str, code: grpc.StatusCode, allowed: set[grpc.StatusCode],
               details: str = "") -> None:
        with self.lock:
            self.by_status[(scenario, code.name)] += 1
            if code not in allowed:
                self.unexpected[(scenario, code.name)] += 1
                self.examples.setdefault((scenario, code.name), details[:200])


def _allowed(key_id: str) -> set[grpc.StatusCode]:
    return KMS_FAULTED if key_id == "kms" else {OK}


def _timeout(key_id: str) -> float:
    return KMS_TIMEOUT if key_id == "kms" else 30.0


def _unary(tally: Tally, scenario: str, call: Callable[..., Any], request: Any,
           allowed: set[grpc.StatusCode], timeout: float) -> None:
    try:
        call(request, timeout=timeout)
        tally.record(scenario, OK, allowed)
    except grpc.RpcError as error:
        tally.record(scenario, error.code(), allowed, error.details() or "")


def _stream(tally: Tally, stub: Any, rng: random.Random, nonce: Iterator[int]) -> None:
    key_id = rng.choice(("env", "hsm"))  # one deadline for the whole stream: no slow KMS here
    batch: list[tuple[pb.SignTransactionRequest, set[grpc.StatusCode]]] = []
    for _ in range(8):
        if rng.random() < 0.25:
            _, request, code = rng.choice(BAD)
            batch.append((request, {code} if request.key_id != "kms" else {code} | KMS_FAULTED))
        else:
            batch.append((pb.SignTransactionRequest(key_id=key_id, transaction=_tx(next(nonce))),
                          {OK}))
    try:
        replies = list(stub.SignTransactions(iter(r for r, _ in batch), timeout=30))
    except grpc.RpcError as error:
        tally.record("stream (whole)", error.code(), {OK}, error.details() or "")
        return
    tally.record("stream (whole)", OK if len(replies) == len(batch) else grpc.StatusCode.DATA_LOSS,
                 {OK}, f"{len(replies)} answers to {len(batch)} requests")
    for index, (reply, (_, allowed)) in enumerate(zip(replies, batch, strict=False)):
        code = (OK if reply.HasField("signed") else
                next(c for c in grpc.StatusCode if c.value[0] == reply.error.code))
        if reply.index != index:
            code = grpc.StatusCode.DATA_LOSS
        tally.record("stream message", code, allowed, reply.error.message)


def caller(target: str, seed: int, stop_at: float, tally: Tally) -> None:
    rng = random.Random(seed)
    nonces = iter(range(seed * 10**9, (seed + 1) * 10**9))
    channel = grpc.insecure_channel(target)
    stub = pb_grpc.SignerServiceStub(channel)
    raw = channel.unary_unary("/signer.v1.SignerService/SignTransaction",
                              request_serializer=None, response_deserializer=None)
    try:
        while time.monotonic() < stop_at:
            pick = rng.random()
            key_id = rng.choice(KEYS)
            if pick < 0.35:
                request = pb.SignTransactionRequest(key_id=key_id, transaction=_tx(next(nonces)))
                _unary(tally, f"valid {key_id}", stub.SignTransaction, request, _allowed(key_id),
                       _timeout(key_id))
            elif pick < 0.55:
                _stream(tally, stub, rng, nonces)
            elif pick < 0.72:
                name, request, code = rng.choice(BAD)
                _unary(tally, f"invalid: {name}", stub.SignTransaction, request, {code}, 30)
            elif pick < 0.77:
                _unary(tally, "undecodable bytes", raw, b"\x12\x05\xff\xfe\xfd\xfc\xfb",
                       {INVALID}, 30)
            elif pick < 0.87:
                request = pb.SignTransactionRequest(key_id=key_id, transaction=_tx(next(nonces)))
                _unary(tally, f"2 ms deadline {key_id}", stub.SignTransaction, request,
                       _allowed(key_id) | {grpc.StatusCode.DEADLINE_EXCEEDED}, 0.002)
            else:
                message = pb.SignMessageRequest(key_id=key_id, message=os.urandom(32))
                _unary(tally, f"SignMessage {key_id}", stub.SignMessage, message,
                       _allowed(key_id), _timeout(key_id))
                _unary(tally, "GetAddress", stub.GetAddress, pb.GetAddressRequest(key_id=key_id),
                       {OK}, 30)
                _unary(tally, "ListKeys", stub.ListKeys, pb.ListKeysRequest(), {OK}, 30)
    except Exception as exc:  # a client-side bug: count it, never hang
        tally.record(f"client error {type(exc).__name__}", grpc.StatusCode.UNKNOWN, set(), repr(exc))
    finally:
        channel.close()


def run(minutes: float) -> int:
    from bench.bench_pkcs11 import TOKEN, softhsm_token
    from tests.support.kms_emulator import Emulator, emulator_environment
    from tests.support.serve_process import start_serve

    seconds = minutes * 60
    os.environ.update(emulator_environment())
    with tempfile.TemporaryDirectory(prefix="soak-") as workdir, softhsm_token() as pin_file, \
            Emulator.start() as emulator:
        import boto3

        kms = boto3.session.Session().client("kms", region_name="us-east-1",
                                             endpoint_url=emulator.endpoint_url)
        kms_key = kms.create_key(KeySpec="ECC_SECG_P256K1", KeyUsage="SIGN_VERIFY")[
            "KeyMetadata"]["KeyId"]
        config = Path(workdir) / "soak.toml"
        config.write_text(
            '[server]\nlisten = "127.0.0.1:0"\n'
            # the 16 callers are one (open-mode) client, each with a stream at times
            f"max_streams_per_client = {CALLERS}\n"
            f'[store]\nurl = "sqlite://{Path(workdir) / "state.db"}"\n'
            '[keys.env]\nbackend = "env"\nprivate_key_env = "SOAK_KEY"\n'
            f'[keys.hsm]\nbackend = "pkcs11"\ntoken_label = "{TOKEN}"\npin_file = "{pin_file}"\n'
            'key_label = "bench"\n'
            f'[keys.kms]\nbackend = "kms"\nkms_key_id = "{kms_key}"\nregion = "us-east-1"\n'
            f'endpoint_url = "{emulator.endpoint_url}"\n', encoding="utf-8")
        served = start_serve(Path(workdir), config, {"SOAK_KEY": KEY})
        try:
            return _soak(served.proc.pid, served.target, emulator, seconds)
        finally:
            served.proc.terminate()
            try:
                served.proc.wait(30)
            except Exception:
                served.proc.kill()
            log = served.log()
            faults = [line for line in log.splitlines() if "unexpected fault" in line]
            print(f"server log: {len(log.splitlines())} lines, {len(faults)} 'unexpected fault'")
            for line in faults[:5]:
                print("  " + line[:200])


def _soak(pid: int, target: str, emulator: Any, seconds: float) -> int:
    tally = Tally()
    samples = [sample(pid)]
    started = time.monotonic()
    stop_at = started + seconds
    threads = [threading.Thread(target=caller, args=(target, i, stop_at, tally), daemon=True)
               for i in range(CALLERS)]
    for thread in threads:
        thread.start()
    # Pools grow to their high-water mark the first time each fault hits (the KMS call pool
    # under the latency fault above all) and never shrink: warm-up is one whole fault cycle.
    warm_at = started + max(len(FAULTS) * FAULT_SECONDS + SAMPLE_SECONDS, seconds / 10)
    warm: Sample | None = None
    fault_index = 0
    next_fault = started + FAULT_SECONDS
    faults_seen: Counter[str] = Counter()
    while time.monotonic() < stop_at:
        time.sleep(min(SAMPLE_SECONDS, max(0.0, stop_at - time.monotonic())))
        now = time.monotonic()
        samples.append(sample(pid))
        if warm is None and now >= warm_at:
            warm = samples[-1]
        if now >= next_fault:
            fault_index = (fault_index + 1) % len(FAULTS)
            emulator.clear()
            fault = FAULTS[fault_index]
            if fault is not None:
                emulator.add_fault(operation="Sign", **fault)
            faults_seen[str(fault)] += 1
            next_fault = now + FAULT_SECONDS
        done = sum(tally.by_status.values())
        print(f"[{now - started:6.0f} s] answers {done}, unexpected {sum(tally.unexpected.values())}, "
              f"RSS {samples[-1].rss_kib / 1024:.1f} MiB, fds {samples[-1].fds}, "
              f"threads {samples[-1].threads}", flush=True)
    for thread in threads:
        thread.join(60)
    emulator.clear()
    time.sleep(2)  # let in-flight calls and abandoned KMS attempts settle
    end = sample(pid)
    return _summary(tally, samples[0], warm, end, seconds, faults_seen,
                    sum(t.is_alive() for t in threads))


def _summary(tally: Tally, first: Sample, warmed: Sample | None, end: Sample, seconds: float,
             faults: Counter[str], stuck: int) -> int:
    warm = warmed or end
    total = sum(tally.by_status.values())
    print(f"\n## soak summary: {seconds / 60:g} min, {CALLERS} callers, {total} answers "
          f"({total / seconds:.0f}/s), faults cycled {dict(faults)}")
    print("| scenario | status | count |\n|---|---|--:|")
    for (scenario, status), count in sorted(tally.by_status.items()):
        print(f"| {scenario} | {status} | {count} |")
    unexpected = sum(tally.unexpected.values())
    print(f"\nunexpected statuses: {unexpected}")
    for (scenario, status), count in sorted(tally.unexpected.items()):
        print(f"  {scenario}: {status} x{count}: {tally.examples[(scenario, status)]}")
    growth = (end.rss_kib - warm.rss_kib) / warm.rss_kib
    print("\n| server process | start | after warm-up | end |\n|---|--:|--:|--:|")
    print(f"| RSS MiB | {first.rss_kib / 1024:.1f} | {warm.rss_kib / 1024:.1f} "
          f"| {end.rss_kib / 1024:.1f} ({growth:+.1%} since warm-up) |")
    print(f"| open fds | {first.fds} | {warm.fds} | {end.fds} |")
    print(f"| threads | {first.threads} | {warm.threads} | {end.threads} |")
    print(f"| threads by kind | {first.kinds_text} | {warm.kinds_text} | {end.kinds_text} |")
    checks = {"0 unexpected statuses": unexpected == 0, "every caller finished": stuck == 0}
    if warmed is None:
        print("SKIP: growth checks: the run was shorter than the warm-up "
              f"({len(FAULTS) * FAULT_SECONDS + SAMPLE_SECONDS:.0f} s)")
    else:
        checks.update({
            "RSS growth under 5% after warm-up": growth < 0.05,
            "no growth in open fds": end.fds <= warm.fds,
            "the service's own threads constant from start-up":
                end.kinds["python"] == first.kinds["python"],
            f"grpc core's threads within {GRPC_CORE_THREAD_BOUND}":
                end.threads - end.kinds["python"] <= GRPC_CORE_THREAD_BOUND,
        })
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}: {name}")
    ours = end.kinds["python"] - first.kinds["python"]
    core = (end.threads - end.kinds["python"]) - (first.threads - first.kinds["python"])
    print(f"  threads since start-up: the service's own {ours:+d}, grpc core's {core:+d} "
          f"(now {end.threads - end.kinds['python']}, bound {GRPC_CORE_THREAD_BOUND})")
    return 0 if all(checks.values()) else 1


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench soak", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    sys.exit(run(parser.parse_args(argv).minutes))
