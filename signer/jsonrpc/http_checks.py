"""What the JSON-RPC door refuses at the HTTP layer before any JSON-RPC: framing that a proxy
in front could read differently (request smuggling), and requests a web page could make
(foreign `Origin`, a rebound DNS name as `Host`, a body type a browser sends without asking).
Every check raises `Refused` with the HTTP status and the reason the caller is told."""

import ipaddress
import re
from collections.abc import Iterable

_DIGITS = re.compile(rb"[0-9]{1,18}")
BLANK_LINE = re.compile(rb"\r?\n\r?\n")  # the end of the head, as h11 finds it
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})


class Refused(Exception):
    """An HTTP refusal: answered with `status` and a -32600 body naming `reason`."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class BrowserGuard:
    """`[jsonrpc] allowed_origins` and `allowed_hosts`, as geth's --http.corsdomain and
    --http.vhosts."""

    def __init__(self, allowed_origins: Iterable[str], allowed_hosts: Iterable[str]) -> None:
        self._allowed_origins = frozenset(allowed_origins)
        self._allowed_hosts = frozenset(allowed_hosts)

    def check(self, headers: Iterable[tuple[bytes, bytes]]) -> None:
        """A web page must not reach the door: not by its origin, not through a rebound DNS
        name, not with a form's or text/plain body a browser sends without asking."""
        values: dict[bytes, list[bytes]] = {}
        for name, value in headers:
            values.setdefault(name, []).append(value)
        origins = values.get(b"origin", [])
        for origin in origins:
            text = origin.decode("latin-1").strip().lower()
            if text not in self._allowed_origins:
                raise Refused(403, f"origin {text[:100]!r} is not in jsonrpc.allowed_origins")
        hosts = values.get(b"host", [])
        if len(hosts) != 1:
            raise Refused(400, "exactly one Host header required")
        host = hosts[0].decode("latin-1").strip().lower()
        if not self._host_allowed(host):
            raise Refused(403, f"host {host[:100]!r} is not a loopback name or address, nor in "
                               "jsonrpc.allowed_hosts")
        types = values.get(b"content-type", [])
        media = types[0].split(b";", 1)[0].strip().lower() if len(types) == 1 else b""
        if media != b"application/json":
            raise Refused(403, "Content-Type must be application/json")

    def _host_allowed(self, host: str) -> bool:
        if host in self._allowed_hosts:
            return True
        name = host
        if host.startswith("["):
            name = host[1:].split("]", 1)[0]
        elif host.count(":") == 1:
            name = host.split(":", 1)[0]
        if name in self._allowed_hosts or name in _LOOPBACK_NAMES:
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True  # an address, not a name: nothing a rebinding attacker's DNS can point


def check_framing(head: bytes) -> None:
    """What h11 lets through but this door refuses: a body framed any way but one digits-only
    Content-Length (a repeated one, even equal, or any Transfer-Encoding could be read
    differently by a proxy in front: request smuggling)."""
    lengths = []
    for line in BLANK_LINE.split(head, 1)[0].split(b"\n")[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        name = name.strip().lower()
        if name == b"transfer-encoding":
            raise Refused(400, "Transfer-Encoding is not accepted: send a Content-Length")
        if name == b"content-length":
            lengths.append(value.strip())
    if len(lengths) > 1:
        raise Refused(400, "repeated Content-Length header")
    if lengths and not _DIGITS.fullmatch(lengths[0]):
        raise Refused(400, "Content-Length must be decimal digits")


def header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None
