"""What `patchflow init` creates besides the schema: folders, and (via hooks) TLS material."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sqlalchemy.engine import make_url

from patchflow import config
from patchflow.errors import UserError

# Other layers (the HTTPS server's certificate, say) add steps here; each returns lines to print.
INIT_HOOKS: list[Callable[[], list[str]]] = []


def ensure_home_layout() -> list[str]:
    home = config.home()
    for sub in ("content", "reports", "logs", "backups"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    for hook in INIT_HOOKS:
        lines.extend(hook())
    return lines


def redacted_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def check_certificate_pair(cert: str | None, key: str | None) -> dict[str, str]:
    if not cert or not key:
        raise UserError("--cert and --key go together")
    for value, what in ((cert, "certificate"), (key, "key")):
        if not Path(value).is_file():
            raise UserError(f"{what} file {value!r} does not exist")
    return {"cert": str(Path(cert).resolve()), "key": str(Path(key).resolve())}
