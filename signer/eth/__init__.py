"""Ethereum logic with no I/O: validation, encoding, digests and signature normalization."""
