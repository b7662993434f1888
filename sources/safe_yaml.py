"""YAML from upstreams (winget manifests, Mozilla advisories), read with the safe loader only.

libyaml's CSafeLoader builds the same plain values as yaml.safe_load (no tags, no objects)
and is ten times faster: 0.05 s against 0.54 s for the 168 real advisories in
../shared/fixtures/vuln/mozilla, which a full mirror of the advisories repeats thousands of
times at every feed sync. The pure-Python SafeLoader is the fallback when PyYAML was built
without libyaml.
"""

from __future__ import annotations

from typing import Any

import yaml

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def safe_load(raw: bytes | str) -> Any:
    """`yaml.safe_load`, with libyaml when PyYAML has it; raises yaml.YAMLError as it does."""
    return yaml.load(raw, Loader=_LOADER)  # a safe loader, C or Python
