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


def database_url() -> str:
    url = os.environ.get("PATCHFLOW_DATABASE_URL") or setting("database", "url")
    if url:
        return str(url)
    return f"sqlite:///{home() / 'patchflow.db'}"


def content_dir() -> Path:
    configured = os.environ.get("PATCHFLOW_CONTENT_DIR") or setting("content", "dir")
    return Path(configured).expanduser().resolve() if configured else home() / "content"


def write_config(values: dict[str, dict[str, Any]]) -> Path:
    """Merge `values` into patchflow.toml; only flat sections of scalars, which is all we write."""
    current = load_config()
    for section, items in values.items():
        current.setdefault(section, {}).update(items)
    lines: list[str] = []
    for section, items in current.items():
        lines.append(f"[{section}]")
        for key, value in items.items():
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
