"""The inventory contract (pure validation, no database): field names, KB normalisation,
limits, and errors that name the failing field."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from patchflow.config import ConfigError
from patchflow.errors import UserError
from patchflow.fleet import internal_networks, is_roaming, parse_duration
from patchflow.fleet.inventory import normalize_kb, validate_documents
from tests.fixtures.agent.harness import base_inventory


@pytest.mark.parametrize("value", ["5034123", "kb5034123", "KB5034123", " KB 5034123 ", 5034123])
def test_kbs_are_normalised(value: Any) -> None:
    assert normalize_kb(value) == "KB5034123"


@pytest.mark.parametrize("value", ["", "KB", "abc", "KB12", "5034123a", None, 1.5])
def test_bad_kbs_are_refused(value: Any) -> None:
    with pytest.raises(ValueError, match="not a KB number"):
        normalize_kb(value)


def test_contract_document_validates_and_normalises() -> None:
    doc = base_inventory("ws-0001", programs=2)
    doc["os"]["installation_type"] = "Server Core"
    doc["programs"][0]["install_date"] = "20250701"  # the registry's format
    doc["programs"][1]["publisher"] = "   "
    inventory = validate_documents(doc)[0]
    assert inventory.hostname == "WS-0001"
    assert inventory.os.installation_type == "Server Core"
    assert inventory.programs[0].install_date == dt.date(2025, 7, 1)
    assert inventory.programs[1].publisher is None
    assert inventory.collected_at == dt.datetime(2026, 11, 29, 10, tzinfo=dt.UTC)
    # KB5034123 appears twice (two spellings); one row, keeping the known date.
    assert [(u.kb, u.installed_on) for u in inventory.unique_updates()] == [
        ("KB5034123", dt.date(2024, 1, 10)), ("KB5035845", None)]


def test_minimal_document_defaults() -> None:
    doc = {"schema_version": 1, "hostname": "h",
           "os": {"name": "Windows 10 Pro", "build": 19045, "arch": "x86"}}
    inventory = validate_documents([doc])[0]
    assert inventory.programs == [] and inventory.updates == []
    assert inventory.pending_reboot is False and inventory.collected_at is None


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["os"].update(arch="amd64"), "os.arch: Input should be 'x64', 'x86' or 'arm64'"),
    (lambda d: d["programs"][0].update(arch="ia64"), "programs.0.arch"),
    (lambda d: d["programs"][0].update(scope="global"), "programs.0.scope"),
    (lambda d: d["programs"][0].update(name="x" * 513), "programs.0.name: String should have"),
    (lambda d: d["programs"][0].update(install_date="2021-13-45"), "programs.0.install_date"),
    (lambda d: d["updates"][1].update(kb="rollup"), "updates.1.kb: not a KB number"),
    (lambda d: d.update(hostname="has space"), "hostname: not a host name"),
    (lambda d: d.update(schema_version=2), "schema_version: Input should be 1"),
    (lambda d: d.update(colected_at="typo"), "colected_at: Extra inputs are not permitted"),
    (lambda d: d["os"].update(installation_type="Nano"), "os.installation_type"),
    (lambda d: d["os"].pop("build"), "os.build: Field required"),
    (lambda d: d.update(programs={}), "programs: Input should be a valid list"),
])
def test_invalid_documents_name_the_field(change: Any, message: str) -> None:
    doc = base_inventory("ws-0001", programs=1)
    change(doc)
    with pytest.raises(ValueError) as raised:
        validate_documents(doc)
    assert message in str(raised.value)
    with pytest.raises(ValueError, match=r"^document 2 of 2: "):
        validate_documents([base_inventory("ok"), doc])


def test_durations() -> None:
    assert parse_duration("30m") == dt.timedelta(minutes=30)
    assert parse_duration("7d") == dt.timedelta(days=7)
    assert parse_duration("2w") == dt.timedelta(weeks=2)
    assert parse_duration("never") is None
    for bad in ("7", "0d", "1y", "-1d", "100000d", "9" * 30 + "d"):
        with pytest.raises(UserError, match="invalid duration"):
            parse_duration(bad)


def test_roaming_detection() -> None:
    default = internal_networks(["10.0.0.0/8", "192.168.0.0/16", "127.0.0.0/8", "fc00::/7"])
    assert not is_roaming("10.20.30.40", default)
    assert not is_roaming("::ffff:192.168.1.5", default)  # IPv4-mapped IPv6
    assert not is_roaming("fd00::1", default)
    assert is_roaming("203.0.113.9", default)
    assert is_roaming("2001:db8::1", default)
    assert not is_roaming(None, default) and not is_roaming("not-an-ip", default)
    with pytest.raises(ConfigError, match="not a network"):
        internal_networks(["10.0.0.0/33"])
