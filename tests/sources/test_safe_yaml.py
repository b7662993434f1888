"""The upstreams' YAML loader: the same values as yaml.safe_load on the real documents, and
the same refusals (no Python objects, one YAMLError for what is not YAML)."""

from __future__ import annotations

import pytest
import yaml

from sources.mozilla import advisory_files
from sources.safe_yaml import safe_load
from tests.conftest import shared_fixtures


def test_real_advisories_and_manifests_load_as_with_safe_load() -> None:
    files = advisory_files(shared_fixtures("vuln", "mozilla"))
    files += sorted(shared_fixtures("winget").rglob("*.yaml"))[:200]
    assert len(files) > 168
    for path in files:
        raw = path.read_bytes()
        assert safe_load(raw) == yaml.safe_load(raw), path


@pytest.mark.parametrize("raw", [
    b"!!python/object/apply:os.system ['touch /tmp/pwned']",  # an object: refused
    b"a: [1, 2",  # not YAML
    b"a: \xff\xfe bad",  # not UTF-8
    "a: b\n\tc: d",
])
def test_what_safe_load_refuses_is_refused(raw: bytes | str) -> None:
    with pytest.raises(yaml.YAMLError):
        safe_load(raw)
