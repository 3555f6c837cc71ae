"""Key backends. Each only knows its public key and how to sign a 32-byte digest."""
