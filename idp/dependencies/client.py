"""The client's network address, as the key of rate limits and per-address lockout counters."""

from __future__ import annotations

import ipaddress
from typing import Annotated

from fastapi import Depends, Request

from idp.configuration.constants import CLIENT_ADDRESS_MAX_LENGTH


def address_key(host: str | None) -> str:
    """One key per client: an IPv4 address, or the /64 prefix of an IPv6 address (one host
    usually holds a whole /64, so single IPv6 addresses would be free to rotate)."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host[:CLIENT_ADDRESS_MAX_LENGTH]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))
    return str(address)


async def get_client_address(request: Request) -> str:
    """The peer address uvicorn reports: behind a reverse proxy, the `X-Forwarded-For` client
    when the proxy is trusted (`FORWARDED_ALLOW_IPS`), else the proxy itself."""
    return address_key(request.client.host if request.client else None)


ClientAddressDep = Annotated[str, Depends(get_client_address)]
