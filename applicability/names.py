"""Normalisation of Uninstall-registry names, publishers and codes for matching programs.

Installed programs describe themselves inconsistently: the same 7-Zip shows as "7-Zip 23.01
(x64)" (exe) or "7-Zip 23.01 (x64 edition)" (MSI), Firefox up to 140 as "Mozilla Firefox (x64
en-US)", Java as "Java 8 Update 381 (64-bit)". Matching on a name with the version, architecture
and locale taken out, and with legal suffixes dropped from publishers, makes those agree while
keeping distinct products ("Java 8" vs "Java", "C++ 2013" vs "C++ 2015") apart: bare integers are
kept because they often name the product rather than its version.
"""

from __future__ import annotations

import re

_ARCH_WORDS = {
    "x64",
    "x86",
    "amd64",
    "arm64",
    "aarch64",
    "arm",
    "win64",
    "win32",
    "i386",
    "i686",
    "x86_64",
    "x86-64",
    "64-bit",
    "32-bit",
    "64bit",
    "32bit",
    "64",
    "32",
    "bit",
    "edition",
}
_LOCALE_FULL = re.compile(r"^[a-z]{2,3}-[a-z]{2,4}$", re.IGNORECASE)
_LOCALE_SHORT = re.compile(r"^[a-z]{2,3}$", re.IGNORECASE)
_VERSIONISH = re.compile(r"^v?\d+(?:[.\-_]\d+)*[a-z]?\d*$", re.IGNORECASE)
_GROUP = re.compile(r"\s*[(\[]([^()\[\]]*)[)\]]")
_VERSION_WORDS = re.compile(
    r"(?<![\w.])(?:version|release|update|build|rev)\s+v?\d[\w.+-]*", re.IGNORECASE
)
_DOTTED = re.compile(r"(?<![\w.])v?\d+(?:\.\d+)+[\w+-]*", re.IGNORECASE)
_ARCH_TOKEN = re.compile(
    r"(?<![\w-])(?:x64|x86|amd64|arm64|aarch64|win64|win32|x86_64|(?:64|32)-?bit)(?![\w-])",
    re.IGNORECASE,
)
_LOCALE_TOKEN = re.compile(r"(?<![\w-])[a-z]{2,3}-[A-Z]{2}(?![\w-])")
_LEGAL = re.compile(
    r"[,\s]+(?:inc|incorporated|ltd|limited|llc|l\.l\.c|corp|corporation|co|company|gmbh|"
    r"e\.\s?v|s\.r\.o|ag|sa|plc|b\.?v|srl|oy|ab|pty|s\.a)\.?$",
    re.IGNORECASE,
)
_GUID = re.compile(r"^\{?([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\}?$", re.I)


def _noise_group(content: str) -> bool:
    """True when a bracketed group holds only version/arch/locale tokens: "(x64 en-US)"."""
    tokens = [t for t in re.split(r"[\s,;/]+", content.strip()) if t]
    if not tokens:
        return True
    has_arch = any(t.casefold() in _ARCH_WORDS for t in tokens)

    def noise(t: str) -> bool:
        lt = t.casefold()
        return (
            lt in _ARCH_WORDS
            or bool(_VERSIONISH.match(t))
            or bool(_LOCALE_FULL.match(t))
            or (has_arch and bool(_LOCALE_SHORT.match(t)))
        )

    return all(noise(t) for t in tokens)


def clean_name(name: object) -> str:
    """The display name without version, architecture and locale tokens, case kept."""
    if not isinstance(name, str):
        return ""
    s = _GROUP.sub(lambda m: "" if _noise_group(m.group(1)) else m.group(0), name)
    s = _VERSION_WORDS.sub("", s)
    s = _DOTTED.sub("", s)
    s = _ARCH_TOKEN.sub("", s)
    s = _LOCALE_TOKEN.sub("", s)
    s = re.sub(r"\s+", " ", s)
    return s.strip(" -_,.:;")


def _strip_legal(s: str) -> str:
    while True:
        t = _LEGAL.sub("", s).strip(" ,.")
        if t == s:
            return s
        s = t


def normalize_name(name: object) -> str:
    """Match key of a display name: `clean_name`, casefolded, legal suffixes dropped."""
    return _strip_legal(clean_name(name).casefold())


def normalize_publisher(publisher: object) -> str:
    """Match key of a publisher: casefolded, whitespace collapsed, legal suffixes dropped."""
    if not isinstance(publisher, str):
        return ""
    return _strip_legal(re.sub(r"\s+", " ", publisher).strip().casefold())


def publishers_agree(a: str, b: str) -> bool:
    """Publishers match when equal or when one is the other plus words ("adobe" vs "adobe
    systems"); an unknown publisher on either side does not veto a name match."""
    if not a or not b:
        return True
    if a == b:
        return True
    short, long = sorted((a, b), key=len)
    return long.startswith(short + " ")


def infer_arch(name: object) -> str | None:
    """Architecture named by a display name ("(64-bit)", "x86", "(64-bit Arm)"), else None."""
    if not isinstance(name, str):
        return None
    s = name.casefold()
    if re.search(r"arm64|aarch64|arm\s*64|64-bit\s+arm|(?<![\w])arm(?![\w])", s):
        return "arm64"
    if re.search(r"x64|x86[_-]64|amd64|win64|64-?\s?bit", s):
        return "x64"
    if re.search(r"x86|i[36]86|win32|32-?\s?bit", s):
        return "x86"
    return None


def normalize_code(code: object) -> str | None:
    """ProductCode/UpgradeCode match key: "{GUID}" upper-cased, other key names casefolded."""
    if not isinstance(code, str):
        return None
    c = code.strip().strip("'\"").strip()
    if not c:
        return None
    m = _GUID.match(c)
    return "{" + m.group(1).upper() + "}" if m else c.casefold()
