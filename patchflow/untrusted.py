"""Text that came from an agent or an upstream, made harmless for each place it is shown.

An endpoint's inventory, a manifest's title or URL, an upstream's error message are data, never
instructions: on a terminal they must not move the cursor, retitle the window or plant a
hyperlink (ESC/OSC/CSI sequences, Rich markup); in a spreadsheet they must not run as a formula;
in an HTML page a URL must not run script (`javascript:`). Each rule is one pure function here,
so every printer, CSV writer and template applies the same one.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from rich.markup import escape

# C0 controls, DEL and C1 controls (ESC, BEL, CSI U+009B, OSC U+009D...), plus the Unicode
# bidirectional overrides that make a terminal show text in another order than it is stored.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_SPACES = re.compile("[\t\n\r\v\f]")
# What JSON leaves raw but a terminal may still obey: DEL and the C1 range (json.dumps already
# writes C0 controls as \\u escapes).
_JSON_RAW_CONTROLS = re.compile("[\x7f-\x9f]")
# A spreadsheet treats a cell starting with one of these as a formula (OWASP CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
LINK_SCHEMES = ("http", "https")


def strip_controls(text: str, keep_newlines: bool = False) -> str:
    """The text without terminal control characters; tabs and line breaks become spaces so
    words stay apart (line feeds are kept with `keep_newlines`, for multi-line messages)."""
    if keep_newlines:
        return "\n".join(strip_controls(line) for line in text.split("\n"))
    return _CONTROLS.sub("", _SPACES.sub(" ", text))


def terminal_text(value: Any) -> str:
    """A value as plain text for a Rich console: no control characters, and `[...]` shown as
    written instead of read as markup (`[link=...]`, `[bold]`)."""
    return escape(strip_controls("" if value is None else str(value)))


def json_terminal(text: str) -> str:
    """JSON text with DEL and C1 controls written as \\u escapes: the same JSON value, but
    nothing a terminal acts on."""
    return _JSON_RAW_CONTROLS.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def csv_cell(value: Any) -> Any:
    """A CSV cell no spreadsheet runs as a formula: a string starting with =, +, -, @, tab or
    carriage return gets a leading single quote. Numbers stay numbers (a negative count is a
    number, not a formula); only text is changed."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def http_url(value: Any) -> str | None:
    """The URL if it is safe to put in an href (http or https with a host), else None: a
    `javascript:` or `data:` URL from a manifest is shown as text, never as a link."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if _CONTROLS.search(text):
        return None
    try:
        parts = urlsplit(text)
    except ValueError:
        return None
    if parts.scheme.lower() not in LINK_SCHEMES or not parts.netloc:
        return None
    return text
