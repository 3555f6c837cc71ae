"""The Ethereum JSON-RPC front door: a second thin adapter over the application path."""
