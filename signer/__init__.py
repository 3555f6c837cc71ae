"""wallet-signer: a remote Ethereum signing service whose keys never leave their backend."""

__version__ = "0.1.0"
