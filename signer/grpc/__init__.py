"""The thin gRPC layer: proto in, call the key ring, proto out."""
