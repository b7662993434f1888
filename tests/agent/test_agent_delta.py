"""Delta inventory uploads: the delta itself (multisets of programs, the server's de-duplication
of KBs, checked against the server's own model on real Windows outputs), what the state
directory remembers, and when the runner sends a delta, a whole inventory, or falls back."""

from __future__ import annotations

import copy
import json
import random
import stat
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from agent.delta import inventory_delta, unique_updates
from agent.platforms.windows import parsers
from agent.platforms.windows.collector import WindowsCollector
from agent.platforms.windows.readers import CannedRunner, DictRegistry
from agent.runner import INVENTORY_PATH, AgentRevoked, AgentRunner, Schedule
from agent.state import INVENTORY_FILE, Identity, StateDir
from agent.transport import RequestRefused, ServerUnreachable, inventory_digest
from patchflow.fleet.inventory import Inventory, describe_errors
from tests.conftest import shared_fixtures
from tests.fixtures.agent.harness import base_inventory
from tests.support.paths import FIXTURES

DAY = 86400.0
START = 1_800_000_000.0


def _doc(programs: int = 3) -> dict[str, Any]:
    doc = base_inventory("WS-0001", programs)
    doc["updates"] = [{"kb": "KB5034123", "installed_on": "2024-01-10"},
                      {"kb": "KB5035845", "installed_on": None}]
    return doc


def _key(program: dict[str, Any]) -> str:
    return json.dumps(program, sort_keys=True)


# --- the delta ---------------------------------------------------------------------------------


def test_identical_documents_give_an_empty_delta() -> None:
    old = _doc()
    new = copy.deepcopy(old)
    new["collected_at"] = "2026-12-01T00:00:00Z"
    delta = inventory_delta(old, new)
    assert delta["programs_removed"] == delta["programs_added"] == []
    assert delta["updates_removed"] == delta["updates_added"] == []
    assert delta["collected_at"] == "2026-12-01T00:00:00Z"
    assert delta["digest"] == inventory_digest(new) == inventory_digest(old)


def test_the_body_carries_the_new_documents_top_fields_digest_and_counts() -> None:
    old = _doc(3)
    new = _doc(5)
    new["os"] = {**new["os"], "ubr": 4000}
    new["pending_reboot"] = True
    new["ms_facts"] = [{"kind": "dotnet_framework", "name": ".NET Framework 4.x",
                        "version": "533320", "detail": None}]
    new["updates"].append({"kb": "kb5035845", "installed_on": "2024-02-13"})  # same KB
    del new["domain"]
    delta = inventory_delta(old, new)
    assert set(delta) == {"schema_version", "hostname", "os", "ms_facts", "pending_reboot",
                          "collected_at", "digest", "program_count", "update_count",
                          "programs_removed", "programs_added", "updates_removed",
                          "updates_added"}  # no "domain": not in the new document
    for key in ("schema_version", "hostname", "os", "ms_facts", "pending_reboot",
                "collected_at"):
        assert delta[key] == new[key]
    assert delta["digest"] == inventory_digest(new) != inventory_digest(old)
    assert (delta["program_count"], delta["update_count"]) == (5, 2)
    assert delta["programs_added"] == new["programs"][3:]
    assert delta["programs_removed"] == []
    # KB5035845 had no date; the later entry with one is what the server keeps now.
    assert delta["updates_added"] == [{"kb": "KB5035845", "installed_on": "2024-02-13"}]
    assert delta["updates_removed"] == []


def test_a_new_program_version_is_one_removal_and_one_addition() -> None:
    old = _doc(3)
    new = copy.deepcopy(old)
    new["programs"][1]["version"] = "2.0.0"
    delta = inventory_delta(old, new)
    assert delta["programs_removed"] == [old["programs"][1]]
    assert delta["programs_added"] == [new["programs"][1]]
    assert delta["programs_added"][0]["version"] == "2.0.0"
    assert delta["program_count"] == 3


def test_programs_are_a_multiset_and_their_order_does_not_matter() -> None:
    old = _doc(3)
    twin = copy.deepcopy(old["programs"][0])
    old["programs"].append(twin)  # two identical entries (two installs side by side)
    new = copy.deepcopy(old)
    new["programs"].pop()  # now one
    delta = inventory_delta(old, new)
    assert delta["programs_removed"] == [twin] and delta["programs_added"] == []
    assert delta["program_count"] == 3
    back = inventory_delta(new, old)
    assert back["programs_added"] == [twin] and back["programs_removed"] == []

    shuffled = copy.deepcopy(old)
    shuffled["programs"].reverse()
    # Key order inside a program does not matter either.
    shuffled["programs"][0] = dict(reversed(list(shuffled["programs"][0].items())))
    delta = inventory_delta(old, shuffled)
    assert delta["programs_removed"] == delta["programs_added"] == []
    assert delta["program_count"] == 4


def test_removed_and_added_programs_are_kept_exactly_as_in_their_documents() -> None:
    old = _doc(2)
    old["programs"][0] = {"name": "Ünïcode ✓", "version": None}
    new = copy.deepcopy(old)
    new["programs"][0] = {"name": "Ünïcode ✓", "version": "1"}
    delta = inventory_delta(old, new)
    assert delta["programs_removed"] == [{"name": "Ünïcode ✓", "version": None}]
    assert delta["programs_added"] == [{"name": "Ünïcode ✓", "version": "1"}]
    assert delta["programs_added"][0] is new["programs"][0]


def test_a_kb_first_without_a_date_then_with_one_keeps_the_date() -> None:
    doc = _doc()
    doc["updates"] = [{"kb": "5034441", "installed_on": None},
                      {"kb": "KB5034441", "installed_on": "2024-01-10"},
                      {"kb": "kb5034441", "installed_on": "2024-03-01"},  # first date stays
                      {"kb": "KB5035845", "installed_on": "2024-02-13"},
                      {"kb": "KB5035845", "installed_on": None},  # no date never wins
                      {"kb": "KB5036000", "installed_on": " "},  # blank is no date
                      {"kb": "KB5036000", "installed_on": "2024-04-09"}]
    assert unique_updates(doc) == {"KB5034441": "2024-01-10", "KB5035845": "2024-02-13",
                                   "KB5036000": "2024-04-09"}
    server = Inventory.model_validate({**doc, "collected_at": None}).unique_updates()
    assert {u.kb: u.installed_on.isoformat() for u in server if u.installed_on} == \
        unique_updates(doc)


def test_kb_spelling_is_no_change_but_a_date_or_a_kb_is() -> None:
    old = _doc()
    new = copy.deepcopy(old)
    new["updates"][0]["kb"] = "kb5034123"
    new["updates"][1]["kb"] = "5035845"
    delta = inventory_delta(old, new)
    assert delta["updates_added"] == delta["updates_removed"] == []
    assert delta["update_count"] == 2

    new["updates"][1]["installed_on"] = "2024-02-13"  # the date became known
    new["updates"][0] = {"kb": "KB5036893", "installed_on": "2024-04-09"}  # KB5034123 gone
    delta = inventory_delta(old, new)
    assert delta["updates_removed"] == ["KB5034123"]
    assert delta["updates_added"] == [{"kb": "KB5036893", "installed_on": "2024-04-09"},
                                      {"kb": "KB5035845", "installed_on": "2024-02-13"}]
    assert delta["update_count"] == 2


def test_a_kb_the_server_would_refuse_makes_the_delta_fail() -> None:
    old = _doc()
    new = copy.deepcopy(old)
    new["updates"].append({"kb": "Q123", "installed_on": None})
    with pytest.raises(ValueError, match="not a KB number"):
        inventory_delta(old, new)


# --- the same KB rule as the server, on real Windows outputs ------------------------------------


def _wesng(name: str) -> str:
    return parsers.decode_output(shared_fixtures("inventory", "wesng-validation", name)
                                 .read_bytes())


def _real_update_lists() -> list[tuple[str, list[dict[str, Any]]]]:
    """Update lists as they come from real machines, and the messy mixes an agent sees when QFE,
    systeminfo and the servicing list all name the same KBs (spelled and dated differently)."""
    qfe7 = [{"kb": kb, "installed_on": day.isoformat() if day else None}
            for kb, day in parsers.parse_qfe_table(
                _wesng("7_sp1_x64_enterprise_en-us_20190305_qfe.txt"))]
    hotfixes7 = [{"kb": kb, "installed_on": None} for kb in parsers.parse_systeminfo(
        _wesng("7_sp1_x64_enterprise_en-us_20190305_systeminfo.txt"))["hotfixes"]]
    # The Windows Update list of the same machine: 34 language packs share one KB number.
    listed = [{"kb": line.split(":", 1)[0], "installed_on": ""}
              for line in _wesng("7_sp1_x64_enterprise_en-us_20190305_updates.txt").splitlines()
              if line.startswith("KB")]
    assert len(listed) - len({u["kb"] for u in listed}) >= 30
    rng = random.Random(20190305)
    respelled = [{**u, "kb": rng.choice([u["kb"].lower(), u["kb"][2:], u["kb"]])}
                 for u in hotfixes7 + qfe7]
    mixed = hotfixes7 + listed + qfe7 + listed
    shuffled = list(mixed)
    rng.shuffle(shuffled)
    return [("win7 qfe", qfe7), ("systeminfo then qfe", hotfixes7 + qfe7),
            ("qfe then systeminfo", qfe7 + hotfixes7), ("respelled", respelled),
            ("with windows update list", mixed), ("shuffled", shuffled)]


def _real_documents() -> list[tuple[str, dict[str, Any]]]:
    docs = [("harness", base_inventory("WS-0001", 5)),
            ("inventory_ws.json", json.loads((FIXTURES / "agent" / "inventory_ws.json")
                                             .read_text(encoding="utf-8")))]
    keys = json.loads((FIXTURES / "agent" / "win11_registry.json").read_text())["keys"]
    qfe10 = shared_fixtures("inventory", "wesng-validation",
                            "10_1809_x64_pro_en-us_20190307_qfe.txt").read_bytes()
    docs.append(("collector", WindowsCollector(DictRegistry(keys),
                                               CannedRunner({"wmic qfe": qfe10})).collect()))
    for name, updates in _real_update_lists():
        docs.append((name, {**base_inventory("WS-0007", 2), "updates": updates}))
    return docs


def test_unique_updates_match_the_servers_rule_on_real_inventories() -> None:
    for name, doc in _real_documents():
        doc = {**doc, "collected_at": None}  # the server checks it against today's date
        server = Inventory.model_validate(doc).unique_updates()
        ours = unique_updates(doc)
        assert len(ours) == len(server), name
        assert set(ours) == {u.kb for u in server}, name
        # And the kept entry is the server's: same date, or none on both sides.
        assert {kb: day if isinstance(day, str) and day.strip() else None
                for kb, day in ours.items()} == \
            {u.kb: u.installed_on.isoformat() if u.installed_on else None for u in server}, name
        assert inventory_delta(doc, doc)["update_count"] == len(server), name


# --- the state directory ---------------------------------------------------------------------


def test_saved_inventory_round_trip_and_full_at(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    assert state.load_inventory() is None
    doc = _doc()
    state.save_inventory(doc, inventory_digest(doc), START)
    assert state.load_inventory() == (doc, inventory_digest(doc), START)
    path = tmp_path / "state" / INVENTORY_FILE
    if sys.platform != "win32":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    changed = _doc(4)
    state.save_inventory(changed, inventory_digest(changed), START + 3600)
    assert state.load_inventory() == (changed, inventory_digest(changed), START + 3600)
    assert not list(path.parent.glob("*.tmp"))
    state.forget_inventory()
    assert state.load_inventory() is None
    state.forget_inventory()  # nothing to forget is fine


@pytest.mark.parametrize("content", [
    "{not json", "[]", '"text"', '{"doc": {}, "digest": "x"}',
    '{"doc": [], "digest": "x", "full_at": 1}', '{"doc": {}, "digest": 5, "full_at": 1}',
    '{"doc": {}, "digest": "DIGEST", "full_at": true}',
    '{"doc": {}, "digest": "DIGEST", "full_at": "1"}',
    '{"doc": {"a": 1}, "digest": "DIGEST", "full_at": 1}',  # not the doc's digest
])
def test_a_corrupt_saved_inventory_is_no_saved_inventory(tmp_path: Path, content: str) -> None:
    state = StateDir(tmp_path)
    (tmp_path / INVENTORY_FILE).write_text(content.replace("DIGEST", inventory_digest({})))
    assert state.load_inventory() is None
    (tmp_path / INVENTORY_FILE).write_text(
        '{"doc": {}, "digest": "DIGEST", "full_at": 1}'.replace("DIGEST", inventory_digest({})))
    assert state.load_inventory() == ({}, inventory_digest({}), 1.0)  # the control


def test_enrolling_again_forgets_the_saved_inventory(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    doc = _doc()
    state.save_inventory(doc, inventory_digest(doc), START)
    state.save_identity(Identity(server="https://s:6201", agent_id="a", secret="s",
                                 hostname="WS-0001"))
    assert state.load_inventory() is None


# --- the runner --------------------------------------------------------------------------------


def _server_view(doc: dict[str, Any]) -> tuple[Counter[str], dict[str, str | None]]:
    """What the server stores for a document, by its own model."""
    model = Inventory.model_validate({**doc, "collected_at": None})
    return (Counter(_key(p) for p in doc.get("programs") or []),
            {u.kb: u.installed_on.isoformat() if u.installed_on else None
             for u in model.unique_updates()})


class DeltaServer:
    """Stores and patches an inventory like the server: If-None-Match answers "unchanged",
    If-Match must name what it holds and the delta must apply exactly, or 412."""

    def __init__(self) -> None:
        self.digest: str | None = None
        self.programs: Counter[str] = Counter()
        self.updates: dict[str, str | None] = {}
        self.calls: list[tuple[str, dict[str, str]]] = []
        self.bodies: list[Any] = []
        self.refuse: RequestRefused | ServerUnreachable | None = None
        self.refusals: list[str] = []

    def request(self, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None) -> Any:
        assert path == INVENTORY_PATH
        self.calls.append((method, dict(headers or {})))
        self.bodies.append(copy.deepcopy(body))
        if self.refuse is not None and method == "PATCH":
            raise self.refuse
        try:
            return self._answer(method, body, headers or {})
        except RequestRefused as exc:
            self.refusals.append(exc.message)
            raise

    def _answer(self, method: str, body: Any, headers: dict[str, str]) -> Any:
        if method == "PUT":
            digest = headers["If-None-Match"].strip('"')
            if digest == self.digest:
                return {"hostname": "WS-0001", "programs": sum(self.programs.values()),
                        "updates": len(self.updates), "unchanged": True}
            try:
                self.programs, self.updates = _server_view(body)
            except ValidationError as exc:
                raise RequestRefused(422, describe_errors(exc.errors())) from None
            self.digest = inventory_digest(body)
            return self._ack(unchanged=False)
        assert method == "PATCH"
        if headers.get("If-Match") != f'"{self.digest}"':
            raise RequestRefused(412, "inventory changed on the server: send it whole")
        programs = Counter(self.programs)
        for program in body["programs_removed"]:
            if not programs[_key(program)]:
                raise RequestRefused(412, "removed program not stored")
            programs[_key(program)] -= 1
        programs.update(_key(p) for p in body["programs_added"])
        updates = dict(self.updates)
        for kb in body["updates_removed"]:
            if updates.pop(kb, "missing") == "missing":
                raise RequestRefused(412, "removed KB not stored")
        for update in body["updates_added"]:
            updates[update["kb"]] = update["installed_on"] or None
        if (sum(programs.values()), len(updates)) != (body["program_count"],
                                                      body["update_count"]):
            raise RequestRefused(412, "counts differ")
        self.programs, self.updates = +programs, updates
        self.digest = body["digest"]
        return self._ack()

    def _ack(self, **extra: Any) -> dict[str, Any]:
        return {"hostname": "WS-0001", "reported_hostname": "WS-0001",
                "programs": sum(self.programs.values()), "updates": len(self.updates), **extra}

    def methods(self) -> list[str]:
        return [method for method, _headers in self.calls]


class StubPlatform:
    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc

    def collect_inventory(self) -> dict[str, Any]:
        return {**copy.deepcopy(self.doc), "collected_at": "2026-12-01T00:00:00Z"}


class WallClock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def _runner(tmp_path: Path, server: DeltaServer, platform: StubPlatform, wall: WallClock,
            **schedule: float) -> AgentRunner:
    return AgentRunner(server, StateDir(tmp_path / "state"), platform,  # type: ignore[arg-type]
                       Schedule(**schedule), wall_clock=wall)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[AgentRunner, DeltaServer, StubPlatform, WallClock]:
    server, platform, wall = DeltaServer(), StubPlatform(_doc(4)), WallClock()
    return _runner(tmp_path, server, platform, wall), server, platform, wall


Setup = tuple[AgentRunner, DeltaServer, StubPlatform, WallClock]


def test_first_upload_is_whole_then_changes_go_as_a_delta(setup: Setup) -> None:
    runner, server, platform, wall = setup
    ack = runner.upload_inventory()
    assert server.methods() == ["PUT"]
    first = runner.state.load_inventory()
    assert first is not None
    assert server.calls[0][1] == {"If-None-Match": f'"{first[1]}"'}
    assert first[1] == inventory_digest(platform.collect_inventory()) == server.digest
    assert first[2] == START and ack["programs"] == 4 and ack["unchanged"] is False

    old_program = copy.deepcopy(platform.doc["programs"][2])
    platform.doc["programs"][2]["version"] = "9.9"
    platform.doc["updates"].append({"kb": "KB5036893", "installed_on": "2024-04-09"})
    wall.now += 3600
    ack = runner.upload_inventory()
    assert server.methods() == ["PUT", "PATCH"]
    assert server.calls[1][1] == {"If-Match": f'"{first[1]}"'}
    body = server.bodies[1]
    assert body["programs_removed"] == [old_program]
    assert body["programs_added"] == [platform.doc["programs"][2]]
    assert body["updates_added"] == [{"kb": "KB5036893", "installed_on": "2024-04-09"}]
    assert body["updates_removed"] == []
    assert "programs" not in body and "updates" not in body
    assert ack == {"hostname": "WS-0001", "reported_hostname": "WS-0001", "programs": 4,
                   "updates": 3}
    saved = runner.state.load_inventory()
    assert saved is not None
    assert saved[0] == platform.collect_inventory()
    assert saved[1] == body["digest"] == server.digest
    assert saved[2] == START  # a delta is no full upload
    assert _server_view(platform.doc) == (server.programs, server.updates)


def test_an_unchanged_inventory_is_a_conditional_put_and_keeps_full_at(setup: Setup) -> None:
    runner, server, _platform, wall = setup
    runner.upload_inventory()
    wall.now += 7200
    ack = runner.upload_inventory()
    assert server.methods() == ["PUT", "PUT"]
    assert server.calls[1] == server.calls[0]  # the same If-None-Match
    assert ack["unchanged"] is True
    saved = runner.state.load_inventory()
    assert saved is not None and saved[2] == START


def test_an_unchanged_answer_with_nothing_saved_starts_the_full_clock(setup: Setup) -> None:
    runner, server, platform, wall = setup
    runner.upload_inventory()
    runner.state.forget_inventory()
    wall.now += 600
    assert runner.upload_inventory()["unchanged"] is True
    saved = runner.state.load_inventory()
    assert saved is not None and saved[2] == START + 600
    platform.doc["programs"].pop()
    runner.upload_inventory()
    assert server.methods() == ["PUT", "PUT", "PATCH"]


def test_a_refused_delta_falls_back_to_the_whole_inventory(setup: Setup) -> None:
    runner, server, platform, wall = setup
    runner.upload_inventory()
    server.digest = "lost"  # the server restored a backup: it holds another inventory
    platform.doc["programs"].pop(0)
    wall.now += 3600
    ack = runner.upload_inventory()
    assert server.methods() == ["PUT", "PATCH", "PUT"]
    digest = inventory_digest(platform.collect_inventory())
    assert server.calls[2][1] == {"If-None-Match": f'"{digest}"'}
    assert server.bodies[2] == platform.collect_inventory()
    assert ack["programs"] == 3
    assert runner.state.load_inventory() == (platform.collect_inventory(), digest, START + 3600)


@pytest.mark.parametrize("status", [404, 405, 409, 412, 422, 428])
def test_any_other_refusal_of_a_delta_sends_the_whole_inventory(
    setup: Setup, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    runner, server, platform, _wall = setup
    runner.upload_inventory()
    server.refuse = RequestRefused(status, "no")
    platform.doc["programs"].pop(0)
    caplog.set_level("INFO", logger="patchflow.agent")
    runner.upload_inventory()
    assert server.methods() == ["PUT", "PATCH", "PUT"]
    assert "wants the whole inventory" in caplog.text
    saved = runner.state.load_inventory()
    assert saved is not None and saved[0]["programs"] == platform.doc["programs"]


@pytest.mark.parametrize("status", [401, 403])
def test_a_revoked_agent_is_not_hidden_by_the_fallback(setup: Setup, status: int) -> None:
    runner, server, platform, _wall = setup
    runner.upload_inventory()
    before = runner.state.load_inventory()
    server.refuse = RequestRefused(status, "agent revoked")
    platform.doc["programs"].pop(0)
    with pytest.raises(AgentRevoked, match="revoked"):
        runner.upload_inventory()
    assert server.methods() == ["PUT", "PATCH"]
    assert runner.state.load_inventory() == before


def test_a_busy_server_is_retried_later_not_sent_the_whole_inventory(setup: Setup) -> None:
    runner, server, platform, _wall = setup
    runner.upload_inventory()
    before = runner.state.load_inventory()
    server.refuse = ServerUnreachable("server busy or failing (503): later", 503)
    platform.doc["programs"].pop(0)
    with pytest.raises(ServerUnreachable):
        runner.upload_inventory()
    assert server.methods() == ["PUT", "PATCH"]
    assert runner.state.load_inventory() == before


def test_a_full_upload_is_due_after_full_inventory_every(tmp_path: Path) -> None:
    server, platform, wall = DeltaServer(), StubPlatform(_doc(4)), WallClock()
    runner = _runner(tmp_path, server, platform, wall, full_inventory_every=DAY)
    runner.upload_inventory()
    for hours in (1, 12, 23):
        wall.now = START + hours * 3600
        platform.doc["programs"].pop()
        runner.upload_inventory()
    assert server.methods() == ["PUT", "PATCH", "PATCH", "PATCH"]
    wall.now = START + DAY
    platform.doc["programs"].append({"name": "New", "version": "1"})
    runner.upload_inventory()
    assert server.methods()[-1] == "PUT"
    saved = runner.state.load_inventory()
    assert saved is not None and saved[2] == START + DAY
    wall.now += 60
    platform.doc["programs"].pop()
    runner.upload_inventory()
    assert server.methods()[-1] == "PATCH"
    assert Schedule().full_inventory_every == DAY


def test_a_wall_clock_set_back_gives_a_full_upload(setup: Setup) -> None:
    runner, server, platform, wall = setup
    runner.upload_inventory()
    wall.now = START - 3600
    platform.doc["programs"].pop()
    runner.upload_inventory()
    assert server.methods() == ["PUT", "PUT"]


def test_a_corrupt_saved_inventory_gives_a_full_upload(setup: Setup, tmp_path: Path) -> None:
    runner, server, platform, _wall = setup
    runner.upload_inventory()
    path = tmp_path / "state" / INVENTORY_FILE
    path.write_text(path.read_text()[:-20])
    platform.doc["programs"].pop()
    runner.upload_inventory()
    assert server.methods() == ["PUT", "PUT"]
    saved = runner.state.load_inventory()
    assert saved is not None and saved[0]["programs"] == platform.doc["programs"]


def test_a_delta_that_cannot_be_computed_sends_the_whole_document(setup: Setup) -> None:
    runner, server, platform, _wall = setup
    runner.upload_inventory()
    platform.doc["updates"].append({"kb": "not a KB", "installed_on": None})
    before = runner.state.load_inventory()
    with pytest.raises(RequestRefused, match="not a KB number") as refused:
        runner.upload_inventory()  # the server's answer to the whole document
    assert refused.value.status == 422
    assert server.methods() == ["PUT", "PUT"]
    assert server.bodies[1]["updates"][-1]["kb"] == "not a KB"
    assert runner.state.load_inventory() == before  # nothing acknowledged, nothing saved


def test_many_random_changes_keep_the_server_equal_to_a_whole_upload(tmp_path: Path) -> None:
    rng = random.Random(7)
    server, platform, wall = DeltaServer(), StubPlatform(_doc(30)), WallClock()
    platform.doc["programs"].append(copy.deepcopy(platform.doc["programs"][0]))  # a twin
    runner = _runner(tmp_path, server, platform, wall)
    kbs = [f"KB50{n:05d}" for n in range(40)]
    for _step in range(60):
        programs, updates = platform.doc["programs"], platform.doc["updates"]
        action = rng.randrange(6)
        if action == 0 and programs:
            programs.pop(rng.randrange(len(programs)))
        elif action == 1:
            programs.append(copy.deepcopy(rng.choice(programs)) if programs and rng.random()
                            < 0.3 else {"name": f"P{rng.randrange(50)}", "version": "1"})
        elif action == 2 and programs:
            rng.choice(programs)["version"] = str(rng.randrange(5))
        elif action == 3:
            kb = rng.choice(kbs)
            updates.append({"kb": rng.choice([kb, kb.lower(), kb[2:]]),
                            "installed_on": rng.choice([None, "", "2024-05-14"])})
        elif action == 4 and updates:
            updates.pop(rng.randrange(len(updates)))
        else:
            rng.shuffle(programs)
            rng.shuffle(updates)
        wall.now += 600
        runner.upload_inventory()
        assert (server.programs, server.updates) == _server_view(platform.doc)
        assert server.digest == inventory_digest(platform.collect_inventory())
    assert server.methods()[0] == "PUT"
    assert server.methods().count("PATCH") > 30
    assert server.refusals == []  # every delta applied: no fallback hid a wrong one
