"""Which address a request comes from. `X-Forwarded-For` is anyone's to write, so it counts only
when the peer itself is a configured trusted proxy (`[server] trusted_proxies`, or
PATCHFLOW_TRUSTED_PROXIES as comma-separated CIDRs); by default no proxy is trusted and the
peer address is the client."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

from patchflow import config
from patchflow.fleet.network import Network, in_any, parse_address, parse_network

ENV = "PATCHFLOW_TRUSTED_PROXIES"


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
    texts = (str(value).strip() for value in configured)
    return [parse_network(text, "trusted proxies") for text in texts if text]


def client_address(peer: str | None, forwarded_for: Iterable[str],
                   networks: Sequence[Network]) -> str | None:
    """The client: walk `X-Forwarded-For` from the right (the hop nearest us) while each hop is a
    trusted proxy; the first untrusted hop is the client. A malformed hop ends the walk at the
    last address we could vouch for."""
    address = parse_address(peer.strip()) if peer else None
    if address is None or not networks or not in_any(address, networks):
        return peer
    hops = [hop for value in forwarded_for for hop in value.split(",")]
    client = peer
    for hop in reversed(hops):
        parsed = parse_address(hop.strip())
        if parsed is None:
            break
        client = str(parsed)
        if not in_any(parsed, networks):
            break
    return client
