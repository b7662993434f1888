"""Which addresses are "inside": an endpoint reporting from elsewhere is roaming, and a policy
may then send it to Microsoft Update instead of our patch server."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Sequence

from patchflow import config

DEFAULT_INTERNAL = (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8",
    "169.254.0.0/16", "::1/128", "fc00::/7", "fe80::/10",
)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def internal_networks(values: Iterable[str] | None = None) -> list[Network]:
    """The networks whose addresses count as "inside"; `[network] internal` in patchflow.toml."""
    if values is None:
        configured = config.setting("network", "internal")
        values = DEFAULT_INTERNAL if configured is None else configured
    if isinstance(values, str):
        values = [values]
    return [parse_network(value, "[network] internal") for value in values]


def parse_network(value: object, setting: str) -> Network:
    """One configured CIDR; a bad one is a ConfigError naming the setting it came from."""
    try:
        return ipaddress.ip_network(str(value).strip(), strict=False)
    except ValueError:
        raise config.ConfigError(
            f"{setting}: {value!r} is not a network (use CIDRs like 10.0.0.0/8)"
        ) from None


@functools.lru_cache(maxsize=131_072)
def parse_address(text: str) -> IPAddress | None:
    """An address as networks are matched against it (IPv4-mapped IPv6 read as IPv4); None
    when it is no address.

    Remembered (addresses are immutable): every agent request parses its peer's address for
    the trusted-proxy check and every upload again for roaming, ~3% of the server's GIL time
    under a burst of changes (py-spy). Bounded: a fleet's addresses fit, a flood of forged
    `X-Forwarded-For` hops cannot grow it without end."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def in_any(address: IPAddress, networks: Sequence[Network]) -> bool:
    return any(address.version == net.version and address in net for net in networks)


def is_roaming(ip: str | None, networks: Sequence[Network]) -> bool:
    """An endpoint is roaming when it reaches us from an address outside every internal network;
    an unknown address (a local import) is not evidence of roaming."""
    address = parse_address(ip) if ip else None
    return address is not None and not in_any(address, networks)
