"""Which addresses are "inside": an endpoint reporting from elsewhere is roaming, and a policy
may then send it to Microsoft Update instead of our patch server."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from patchflow import config

DEFAULT_INTERNAL = (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8",
    "169.254.0.0/16", "::1/128", "fc00::/7", "fe80::/10",
)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def internal_networks(values: Iterable[str] | None = None) -> list[Network]:
    """The networks whose addresses count as "inside"; `[network] internal` in patchflow.toml."""
    if values is None:
        configured = config.setting("network", "internal")
        values = DEFAULT_INTERNAL if configured is None else configured
    if isinstance(values, str):
        values = [values]
    networks: list[Network] = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(str(value).strip(), strict=False))
        except ValueError:
            raise config.ConfigError(
                f"[network] internal: {value!r} is not a network (use CIDRs like 10.0.0.0/8)"
            ) from None
    return networks


def is_roaming(ip: str | None, networks: Sequence[Network]) -> bool:
    """An endpoint is roaming when it reaches us from an address outside every internal network;
    an unknown address (a local import) is not evidence of roaming."""
    if not ip:
        return False
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return not any(address.version == net.version and address in net for net in networks)
