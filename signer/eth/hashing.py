"""keccak-256 for everything wallet-signer hashes itself.

eth-hash's pysha3 backend (safe-pysha3, a C extension) rather than eth-hash's default pick,
pycryptodome: about 1.6 µs a 150-byte hash against about 9 µs, and it keeps the GIL for the
whole (short) hash, where pycryptodome's ctypes calls drop and retake it three times a hash.
With many serving threads each hand-off is a chance to be descheduled: the in-process signing
path at 16 threads went from about 660 to 470 µs of CPU a call with this change alone. Both
backends are eth-hash's own and give the same digests (tests/eth/test_eth_reference.py).
"""

from eth_hash.main import Keccak256
from eth_hash.utils import load_backend

keccak = Keccak256(load_backend("pysha3"))

__all__ = ["keccak"]
