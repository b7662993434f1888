"""Which address a request comes from. `X-Forwarded-For` is anyone's to write, so it counts only
when the peer itself is a configured trusted proxy (`[server] trusted_proxies`, or
PATCHFLOW_TRUSTED_PROXIES as comma-separated CIDRs); by default no proxy is trusted and the
peer address is the client."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Sequence
from typing import Any

from patchflow import config
from patchflow.fleet import Network

ENV = "PATCHFLOW_TRUSTED_PROXIES"
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def trusted_proxies(configured: Any = None) -> list[Network]:
    """The trusted proxy networks: the environment wins over patchflow.toml."""
    if configured is None:
        env = os.environ.get(ENV)
        configured = env.split(",") if env is not None else config.setting(
            "server", "trusted_proxies", [])
    if isinstance(configured, str):
        configured = configured.split(",")
    if not isinstance(configured, Iterable):
        raise config.ConfigError(f"[server] trusted_proxies must be a list of CIDRs, not "
                                 f"{configured!r}")
    networks: list[Network] = []
    for value in configured:
        text = str(value).strip()
        if not text:
            continue
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise config.ConfigError(
                f"trusted proxies: {text!r} is not a network (use CIDRs like 10.0.0.0/8)"
            ) from None
    return networks


def _address(text: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def _trusted(address: IPAddress, networks: Sequence[Network]) -> bool:
    return any(address.version == net.version and address in net for net in networks)


def client_address(peer: str | None, forwarded_for: Iterable[str],
                   networks: Sequence[Network]) -> str | None:
    """The client: walk `X-Forwarded-For` from the right (the hop nearest us) while each hop is a
    trusted proxy; the first untrusted hop is the client. A malformed hop ends the walk at the
    last address we could vouch for."""
    address = _address(peer) if peer else None
    if address is None or not networks or not _trusted(address, networks):
        return peer
    hops = [hop for value in forwarded_for for hop in value.split(",")]
    client = peer
    for hop in reversed(hops):
        parsed = _address(hop)
        if parsed is None:
            break
        client = str(parsed)
        if not _trusted(parsed, networks):
            break
    return client
