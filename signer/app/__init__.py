"""The one application path every door (gRPC, JSON-RPC) calls: caller identity -> key access
-> freeze -> policy -> sign (WalletSigner) -> audit. It knows no transport."""
