"""What the server reads from patchflow.toml once at start-up: restarting applies changes, and no
request pays for reading the file."""

from __future__ import annotations

from dataclasses import dataclass, field

from patchflow import config
from patchflow.fleet import DEFAULT_INTERNAL, Network, internal_networks
from server.proxies import trusted_proxies

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
DEFAULT_ENROLL_FAILURES = 10


@dataclass
class ServerSettings:
    database_url: str
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    # Failed enrollments allowed per (client address, token) per minute before answering 429;
    # ratelimit.ADDRESS_FACTOR times as many per address over all tokens.
    enroll_failures_per_minute: int = DEFAULT_ENROLL_FAILURES
    internal: list[Network] = field(default_factory=lambda: internal_networks(DEFAULT_INTERNAL))
    # Peers whose X-Forwarded-For is believed (reverse proxies); none by default.
    trusted_proxies: list[Network] = field(default_factory=list)

    @classmethod
    def from_config(cls) -> ServerSettings:
        return cls(
            database_url=config.database_url(),
            max_body_bytes=_positive_int("max_body_bytes", DEFAULT_MAX_BODY_BYTES),
            enroll_failures_per_minute=_positive_int(
                "enroll_failures_per_minute", DEFAULT_ENROLL_FAILURES
            ),
            internal=internal_networks(),
            trusted_proxies=trusted_proxies(),
        )


def _positive_int(key: str, default: int) -> int:
    value = config.setting("server", key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise config.ConfigError(f"[server] {key} must be a positive integer, not {value!r}")
    return value
