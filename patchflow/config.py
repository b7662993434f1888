"""Where patchflow keeps its state, and how it is configured.

Precedence: environment variables, then `PATCHFLOW_HOME/patchflow.toml`, then defaults. The
home is resolved on every call (not cached at import) so tests and the demo can point one
process at several homes.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

DEFAULT_HOME = "./.patchflow"
CONFIG_NAME = "patchflow.toml"


class ConfigError(Exception):
    """A configuration problem the user must fix; the message is one line."""


def home() -> Path:
    return Path(os.environ.get("PATCHFLOW_HOME", DEFAULT_HOME)).expanduser().resolve()


def config_path() -> Path:
    return home() / CONFIG_NAME


def load_config() -> dict[str, Any]:
    path = config_path()
    if not path.exists():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


def setting(section: str, key: str, default: Any = None) -> Any:
    return load_config().get(section, {}).get(key, default)


def number(section: str, key: str, default: float, low: float, high: float) -> float:
    """A numeric setting within [low, high]; anything else (text, a boolean, out of range) is a
    one-line ConfigError naming the key, not a traceback or a silently odd value."""
    value = setting(section, key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ConfigError(
            f"[{section}] {key} must be a number between {low:g} and {high:g}, not {value!r}")
    return value


def database_url() -> str:
    url = os.environ.get("PATCHFLOW_DATABASE_URL") or setting("database", "url")
    if url:
        return str(url)
    return f"sqlite:///{home() / 'patchflow.db'}"


def content_dir() -> Path:
    configured = os.environ.get("PATCHFLOW_CONTENT_DIR") or setting("content", "dir")
    return Path(configured).expanduser().resolve() if configured else home() / "content"


def storage_url() -> str | None:
    """`[storage] url` (PATCHFLOW_STORAGE_URL first): the shared storage for content and
    reports (patchflow/catalog/storage.py); None, the default, keeps both in local folders."""
    value = os.environ.get("PATCHFLOW_STORAGE_URL") or setting("storage", "url")
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f"[storage] url in patchflow.toml must be text, not {value!r}")
    return value


def write_config(values: dict[str, dict[str, Any]]) -> Path:
    """Merge `values` into patchflow.toml (a None value removes its key). tomli-w writes it, so
    any text (a newline, quotes, backslashes) reads back as written; the file is replaced
    atomically, so a crash mid-write never leaves a config that does not load."""
    current = load_config()
    for section, items in values.items():
        merged = current.setdefault(section, {})
        for key, value in items.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(tomli_w.dumps(current), encoding="utf-8")
    os.replace(tmp, path)
    return path
