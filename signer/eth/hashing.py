"""keccak-256 for everything wallet-signer hashes itself.

eth-hash's pysha3 backend (safe-pysha3, a C extension) rather than eth-hash's default pick,
pycryptodome: about 1.6 µs a 150-byte hash against about 9 µs, and it keeps the GIL for the
whole (short) hash, where pycryptodome's ctypes calls drop and retake it three times a hash;
with many serving threads each of those is a chance to be descheduled (measured in
bench/README: the signing path's CPU per call grows about 2.5 times from 1 to 16 threads, most of it
such hand-offs). Both backends are eth-hash's own and give the same digests (tested).
"""

from eth_hash.main import Keccak256
from eth_hash.utils import load_backend

keccak = Keccak256(load_backend("pysha3"))

__all__ = ["keccak"]
