"""Install job defaults from `[install]` in patchflow.toml: read when a job is created (and by
the flow for its polling), so a change applies to the next job, never to a running one."""

from __future__ import annotations

from dataclasses import dataclass

from patchflow import config

DEFAULT_MAX_ATTEMPTS = 2
DEFAULT_ITEM_TIMEOUT_S = 3600
DEFAULT_RETRY_DELAY_S = 60.0
DEFAULT_POLL_SECONDS = 5.0


@dataclass(frozen=True)
class InstallSettings:
    max_attempts: int = DEFAULT_MAX_ATTEMPTS  # per item, retryable failures only
    item_timeout_s: int = DEFAULT_ITEM_TIMEOUT_S  # from dispatch to the agent's final result
    retry_delay_s: float = DEFAULT_RETRY_DELAY_S  # before a retryable failure is offered again
    poll_seconds: float = DEFAULT_POLL_SECONDS  # how often the flow looks at the items

    @classmethod
    def from_config(cls) -> InstallSettings:
        return cls(
            max_attempts=int(_number("max_attempts", DEFAULT_MAX_ATTEMPTS, 1, 20)),
            item_timeout_s=int(_number("item_timeout_s", DEFAULT_ITEM_TIMEOUT_S, 1, 7 * 86400)),
            retry_delay_s=float(_number("retry_delay_s", DEFAULT_RETRY_DELAY_S, 0, 86400)),
            poll_seconds=float(_number("poll_seconds", DEFAULT_POLL_SECONDS, 0.05, 600)),
        )


def _number(key: str, default: float, low: float, high: float) -> float:
    return config.number("install", key, default, low, high)
