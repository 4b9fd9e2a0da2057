"""`host:port` strings as the API takes them: parsing, the loopback-only rule for listeners, display form."""

from __future__ import annotations

import ipaddress

from services.netproxy.errors import BAD_REQUEST_BODY, ApiError

LOOPBACK_NAMES = {"localhost": "127.0.0.1", "": "127.0.0.1"}


def split_hostport(address: str) -> tuple[str, str]:
    """Go's net.SplitHostPort: `host:port` or `[v6]:port`; raises ValueError with Go's wording."""
    if address.startswith("["):
        end = address.find("]")
        if end < 0:
            raise ValueError(f"address {address}: missing ']' in address")
        host, rest = address[1:end], address[end + 1 :]
        if not rest.startswith(":"):
            raise ValueError(f"address {address}: missing port in address")
        return host, rest[1:]
    if ":" not in address:
        raise ValueError(f"address {address}: missing port in address")
    host, port = address.rsplit(":", 1)
    if ":" in host:
        raise ValueError(f"address {address}: too many colons in address")
    return host, port


def _port(address: str, port: str, allow_zero: bool) -> int:
    if not port.isdigit() or not (0 if allow_zero else 1) <= int(port) <= 65535:
        raise ValueError(f"address {address}: invalid port {port!r}")
    return int(port)


def parse_listen(address: str) -> tuple[str, int]:
    """A listen address, which must be on loopback: this server never listens beyond 127.0.0.1/::1."""
    try:
        host, port = split_hostport(address)
        number = _port(address, port, allow_zero=True)
    except ValueError as exc:
        raise BAD_REQUEST_BODY.joined(f"listen {exc}") from None
    ip = LOOPBACK_NAMES.get(host.lower(), host)
    try:
        loopback = ipaddress.ip_address(ip).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ApiError(
            f"bad request body: listen address {address} is not loopback: the embedded server only listens on "
            "127.0.0.1, ::1 or localhost",
            400,
        )
    return ip, number


def parse_upstream(address: str) -> tuple[str, int]:
    try:
        host, port = split_hostport(address)
        return (host or "127.0.0.1"), _port(address, port, allow_zero=False)
    except ValueError as exc:
        raise BAD_REQUEST_BODY.joined(f"upstream {exc}") from None


def join_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
