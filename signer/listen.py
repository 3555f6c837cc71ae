"""A listener's address, one type for every listener (`[server] listen` for gRPC,
`[jsonrpc] listen`, `[metrics] listen`): HOST:PORT parsing and whether it is loopback."""

import ipaddress
import re
from typing import Annotated

from pydantic import AfterValidator


def split_listen(listen: str) -> tuple[str, int]:
    match = re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[^:\[\]]+):(\d{1,5})", listen)
    if not match or not 0 <= int(match.group(2)) < 65536:
        raise ValueError(f"expected HOST:PORT (IPv6 as [::1]:PORT), got {listen!r}")
    return match.group(1).strip("[]"), int(match.group(2))


def is_loopback(listen: str) -> bool:
    host, _ = split_listen(listen)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_port(value: str) -> str:
    split_listen(value)
    return value


# A config field holding HOST:PORT; a bad one is refused at validation, naming the field.
ListenAddress = Annotated[str, AfterValidator(_host_port)]
