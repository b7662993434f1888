"""Install results as real endpoints report them, on SQLite and MariaDB: a crash exit code
beyond a signed INT (0xC0000005) posted through the real agent API; an agent whose result
cannot be delivered keeps polling and running new jobs, and delivers its outbox later; one
installer file listed under two architectures; and a simulated upgrade that replaces the
program entry the scan matched instead of adding a second one."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from models import MissingPatch
from models.db import session_scope
from patchflow import install as svc
from patchflow.catalog.catalog_store import offer, upsert_patches
from patchflow.catalog.content import ContentStore
from patchflow.install import agent_jobs, dispatch
from patchflow.install.settings import InstallSettings
from patchflow.scanning.service import RESCANS
from sources.winget import parse_manifest_files
from tests.fixtures.agent.harness import Api, api_on_both_databases, wait_rescanned
from tests.fixtures.install.agents import SimAgent, inventory, program
from tests.fixtures.install.world import PAYLOADS, World, build, sha
from tests.support.migrations import migrate
from tests.support.polling import wait_for

CRASH = 0xC0000005  # STATUS_ACCESS_VIOLATION as GetExitCodeProcess reports it: 3221225477
FAST = InstallSettings(max_attempts=1, item_timeout_s=600, retry_delay_s=0, poll_seconds=0.01)


api = api_on_both_databases("install-results")


@pytest.fixture
def world(api: Api) -> Iterator[World]:
    api.reset()
    with session_scope(api.db_url) as session:
        made = build(session, hosts=())
    store = ContentStore()
    for data in PAYLOADS.values():
        store.put_bytes(data, sha(data))
    yield made
    _settle()


def _settle() -> None:
    """Let the uploads' background rescans finish (a rescan is queued just after an upload's
    response and writes the endpoint's missing rows)."""
    time.sleep(RESCANS.delay + 0.2)
    assert RESCANS.wait_idle(30)


def _endpoint_id(api: Api, hostname: str) -> int:
    with sa.create_engine(api.db_url).connect() as conn:
        return int(conn.execute(sa.text("SELECT id FROM endpoints WHERE hostname = :h"),
                                {"h": hostname}).scalar_one())


def _offer(api: Api, endpoint_id: int, patch_id: int, reason: str) -> int:
    """A job of one item for this endpoint, resolved and offered to its agent; the item id."""
    _settle()  # else a rescan may write the pair between the check and the insert below
    with session_scope(api.db_url) as session:
        if session.get(MissingPatch, (endpoint_id, patch_id)) is None:
            session.add(MissingPatch(endpoint_id=endpoint_id, patch_id=patch_id, reason=reason))
        job_id = svc.create_job(session, [(patch_id, endpoint_id)], "tests", settings=FAST).id
    dispatch.start_job(job_id, None)
    assert dispatch.resolve_items(job_id)["resolved"] == 1
    assert dispatch.dispatch(job_id)["dispatched"] == 1
    with sa.create_engine(api.db_url).connect() as conn:
        return int(conn.execute(sa.text("SELECT id FROM install_job_items WHERE job_id = :j"),
                                {"j": job_id}).scalar_one())


def _item(api: Api, item_id: int) -> dict[str, Any]:
    with sa.create_engine(api.db_url).connect() as conn:
        row = conn.execute(sa.text("SELECT state, exit_code, message FROM install_job_items "
                                   "WHERE id = :i"), {"i": item_id}).one()
        events = [tuple(e) for e in conn.execute(sa.text(
            "SELECT state, exit_code FROM install_item_events WHERE item_id = :i ORDER BY id"),
            {"i": item_id})]
    return {"state": row.state, "exit_code": row.exit_code, "message": row.message,
            "events": events}


def _sevenzip_host(api: Api, folder: Path, host: str, simulate: dict[str, Any]) -> SimAgent:
    agent = SimAgent(api, folder / host, inventory(host, 5800, [], [
        program("7-Zip 24.08 (x64)", "24.08", "Igor Pavlov")], simulate))
    agent.runner.upload_inventory()
    wait_rescanned(api, host)  # its rescan must not race the rows the test seeds next
    return agent


# --- item 3: a crash exit code is stored on both databases -----------------------------------


def test_a_crash_exit_code_from_a_real_agent_is_stored(api: Api, world: World,
                                                      tmp_path: Path) -> None:
    agent = _sevenzip_host(api, tmp_path, "WS-CRASH", {"exit_codes": {"7zip.7zip": CRASH}})
    endpoint = _endpoint_id(api, "WS-CRASH")
    item_id = _offer(api, endpoint, world.patches["7zip"], "7-Zip 24.08 (x64) < 25.01")
    try:
        outcome = agent.runner.run_once()
    finally:
        agent.client.close()
    assert outcome == {"jobs": 1, "results_sent": 1}
    assert agent.runner.state.pending_results() == []  # delivered, not stuck in the outbox
    item = _item(api, item_id)
    assert item["state"] == "failed" and item["exit_code"] == CRASH == 3221225477
    assert f"exit code {CRASH}" in item["message"]
    assert item["events"][-1] == ("failed", CRASH)

    # The signed reading of the same code, as some tools report it, is stored as sent.
    second = _offer(api, endpoint, world.patches["kb"], "build < fixed")
    headers = {"X-Agent-Id": agent.client.agent_id or "",
               "Authorization": f"Bearer {agent.client.secret}"}
    with api.client() as http:
        answer = http.post(f"/api/v1/agent/jobs/{second}/result", headers=headers, json={
            "state": "failed", "exit_code": CRASH - 2**32,
            "details": {"result_id": "signed", "attempt": 1}})
    assert answer.status_code == 200, answer.text
    assert _item(api, second)["exit_code"] == -1073741819


# --- item 3: the outbox does not jam the agent -----------------------------------------------


class RefuseResults:
    """ASGI wrapper in front of the real app: while `refused` names an item, that item's
    result posts get 503, as from a database that cannot store them; the rest passes."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.refused: set[int] = set()
        self.polls = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":  # the module's server already runs the app's lifespan
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] == "http":
            path = str(scope["path"])
            if scope["method"] == "GET" and path == "/api/v1/agent/jobs":
                self.polls += 1
            parts = path.split("/")
            if (scope["method"] == "POST" and path.endswith("/result")
                    and parts[-2].isdigit() and int(parts[-2]) in self.refused):
                body = json.dumps({"error": "database unavailable, retry later"}).encode()
                await send({"type": "http.response.start", "status": 503,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


@contextmanager
def refusing_server(api: Api) -> Iterator[tuple[RefuseResults, str]]:
    """A second real server (same database and certificate) behind the wrapper."""
    from server.app import create_app
    from server.run import BackgroundServer
    from server.settings import ServerSettings

    wrapper = RefuseResults(create_app(ServerSettings(database_url=api.db_url)))
    tls = api.home / "tls"
    with BackgroundServer(wrapper, tls / "server.crt", tls / "server.key") as server:  # type: ignore[arg-type]
        yield wrapper, server.url


def test_an_undeliverable_result_waits_in_the_outbox_while_new_jobs_run(
    api: Api, world: World, tmp_path: Path
) -> None:
    with refusing_server(api) as (proxy, url):
        server = Api(url, api.home, api.db_url, api.cert, api.fingerprint, api.app)
        agent = _sevenzip_host(server, tmp_path, "WS-OUTBOX", {})
        endpoint = _endpoint_id(api, "WS-OUTBOX")
        first = _offer(api, endpoint, world.patches["7zip"], "7-Zip 24.08 (x64) < 25.01")
        proxy.refused.add(first)
        outbox = agent.state_dir / "outbox"
        agent.start()
        try:
            wait_for("the first result queued",
                     lambda: len(list(outbox.glob("*.json"))) == 1, 30, 0.05)
            polls = proxy.polls
            wait_for("polls to go on", lambda: proxy.polls >= polls + 5, 30, 0.05)
            assert _item(api, first)["state"] == "dispatched"  # nothing recorded yet

            # A new job runs and reports while the first result still waits.
            second = _offer(api, endpoint, world.patches["kb"], "build < fixed")
            wait_for("the second job", lambda: _item(api, second)["state"] == "succeeded", 30, 0.05)
            ran = [r["patch"] for r in agent.doc["simulate"]["ran"]]
            assert ran == ["7zip.7zip@25.01", "KB5900110"]
            wait_for("the second result sent",
                     lambda: len(list(outbox.glob("*.json"))) == 1, 30, 0.05)
            assert _item(api, first)["state"] == "dispatched"

            proxy.refused.clear()  # the server can store it again
            wait_for("the outbox delivered",
                     lambda: _item(api, first)["state"] == "succeeded", 30, 0.05)
            wait_for("an empty outbox", lambda: not list(outbox.glob("*.json")), 30, 0.05)
        finally:
            agent.stop()
    assert [r["patch"] for r in agent.doc["simulate"]["ran"]] == ["7zip.7zip@25.01",
                                                                  "KB5900110"]  # once each
    assert ("succeeded", 0) in _item(api, first)["events"]


# --- item 20: one file listed under two architectures ----------------------------------------

TOOL_FILE = b"contoso tool 2.0, a 32-bit installer"
TOOL_MANIFEST = {
    "Contoso.Tool.installer.yaml": f"""\
PackageIdentifier: Contoso.Tool
PackageVersion: 2.0.0
InstallerType: nullsoft
Scope: machine
InstallerSwitches:
  Silent: /S
Installers:
- Architecture: x86
  InstallerUrl: https://downloads.contoso.invalid/tool-2.0.0-setup.exe
  InstallerSha256: {sha(TOOL_FILE).upper()}
  AppsAndFeaturesEntries:
  - DisplayName: Contoso Tool 2.0.0 (x86)
- Architecture: x64
  InstallerUrl: https://downloads.contoso.invalid/tool-2.0.0-setup.exe
  InstallerSha256: {sha(TOOL_FILE).upper()}
  AppsAndFeaturesEntries:
  - DisplayName: Contoso Tool 2.0.0 (x64)
ManifestType: installer
ManifestVersion: 1.6.0
""",
    "Contoso.Tool.locale.en-US.yaml": """\
PackageIdentifier: Contoso.Tool
PackageVersion: 2.0.0
PackageLocale: en-US
Publisher: Contoso
PackageName: Contoso Tool
License: MIT
ShortDescription: A tool whose 32-bit installer is offered to x86 and x64 machines.
ManifestType: defaultLocale
ManifestVersion: 1.6.0
""",
    "Contoso.Tool.yaml": """\
PackageIdentifier: Contoso.Tool
PackageVersion: 2.0.0
DefaultLocale: en-US
ManifestType: version
ManifestVersion: 1.6.0
""",
}


def test_items_keep_the_installer_chosen_for_their_architecture(api: Api, world: World,
                                                                tmp_path: Path) -> None:
    doc = parse_manifest_files({k: v.encode() for k, v in TOOL_MANIFEST.items()})
    record = doc.patches[0]
    assert [(i.arch, i.sha256.lower()) for i in record.installers] == [
        ("x86", sha(TOOL_FILE)), ("x64", sha(TOOL_FILE))]
    with session_scope(api.db_url) as session:
        patch_id = upsert_patches(session, [record])[record.key]
        offer(session, world.server, [patch_id])
    ContentStore().put_bytes(TOOL_FILE, sha(TOOL_FILE))
    agents = {}
    for host, arch in (("WS-X86", "x86"), ("WS-X64", "x64")):
        agents[arch] = SimAgent(api, tmp_path / host, inventory(host, 5800, [], [
            program(f"Contoso Tool 1.0.0 ({arch})", "1.0.0", "Contoso", arch)]))
        agents[arch].runner.upload_inventory()
    items = {arch: _offer(api, _endpoint_id(api, f"WS-{arch.upper()}"), patch_id,
                          f"Contoso Tool 1.0.0 ({arch}) < 2.0.0") for arch in ("x86", "x64")}
    with sa.create_engine(api.db_url).connect() as conn:
        chosen = dict(conn.execute(sa.text(
            "SELECT i.id, p.arch FROM install_job_items i "
            "JOIN patch_installers p ON p.id = i.installer_id")).all())
    assert chosen == {items["x86"]: "x86", items["x64"]: "x64"}
    for arch, agent in agents.items():
        endpoint = _endpoint_id(api, f"WS-{arch.upper()}")
        [job] = agent_jobs.poll(endpoint)
        assert job["installer"]["arch"] == arch
        assert job["installer"]["display_names"] == [f"Contoso Tool 2.0.0 ({arch})"]
        try:
            assert agent.runner.run_once()["results_sent"] == 1
        finally:
            agent.client.close()
        names = [(p["name"], p["version"], p["arch"]) for p in agent.doc["programs"]]
        assert names == [(f"Contoso Tool 2.0.0 ({arch})", "2.0.0", arch)]
        assert _item(api, items[arch])["state"] == "succeeded"


# --- item 21: a simulated upgrade replaces the entry the scan matched -------------------------


def _firefox_job(version: str, arch: str, **installer: Any) -> dict[str, Any]:
    """A job as the server sends it for the real Mozilla.Firefox manifests (PackageName
    "Mozilla Firefox (en-US)", the product code as the Uninstall key name)."""
    return {"id": 7, "attempt": 1, "patch": {
        "package_id": "Mozilla.Firefox", "version": version, "vendor": "Mozilla",
        "title": f"Mozilla Firefox (en-US) {version}", "package_name": "Mozilla Firefox (en-US)"},
        "installer": {"type": "nullsoft", "arch": arch,
                      "product_code": f"Mozilla Firefox {version} ({arch} en-US)",
                      "display_names": [], **installer}}


def _as_sent(job: dict[str, Any], platform: Any) -> dict[str, Any]:
    """The job with the `program` the server adds when it polls (agent_jobs._payload): the
    installed entry it upgrades, found with the scan's rules from the stored inventory."""
    from patchflow.install.upgrades import program_target

    programs = platform.load_inventory()["programs"]
    return {**job, "program": program_target(programs, job["patch"], job["installer"])}


def test_a_simulated_upgrade_replaces_the_matched_program(tmp_path: Path) -> None:
    from agent.platforms.simulated import SimulatedPlatform

    path = tmp_path / "inventory.json"
    programs = [
        {**program("Mozilla Firefox (x64 en-US)", "140.0", "Mozilla"),
         "product_code": "Mozilla Firefox 140.0 (x64 en-US)"},
        program("Mozilla Firefox (x86 en-US)", "140.0", "Mozilla", "x86"),
        program("Mozilla Maintenance Service", "140.0", "Mozilla"),
        {**program("7-Zip 23.01 (x64 edition)", "23.01.00.0", "Igor Pavlov"),
         "upgrade_code": "{23170F69-40C1-2702-0000-000004000000}"},
        program("7-Zip 19.00 (x64)", "19.00", "Igor Pavlov"),  # an old key left behind
    ]
    path.write_text(json.dumps(inventory("WS-FF", 5800, [], programs)), encoding="utf-8")
    platform = SimulatedPlatform(path)

    job = _as_sent(_firefox_job("156.0.1", "x64"), platform)
    assert job["program"]["replaces"]["name"] == "Mozilla Firefox (x64 en-US)"
    assert platform.install(job, None) == (0, "")
    after = platform.collect_inventory()["programs"]
    assert len(after) == len(programs)  # replaced in place, not added beside the old one
    firefox = [(p["name"], p["version"], p["arch"], p["product_code"]) for p in after
               if p["name"].startswith("Mozilla Firefox")]
    assert firefox == [
        ("Mozilla Firefox (x64 en-US)", "156.0.1", "x64", "Mozilla Firefox 156.0.1 (x64 en-US)"),
        ("Mozilla Firefox (x86 en-US)", "140.0", "x86", None)]  # the other arch untouched
    assert {"Mozilla Maintenance Service": "140.0"}.items() <= {
        p["name"]: p["version"] for p in after}.items()

    # An MSI major upgrade is found by its UpgradeCode; the newest of two entries is the copy
    # in use, the one the scan judged, so that one is replaced.
    platform.install(_as_sent({"id": 8, "attempt": 1, "patch": {
        "package_id": "7zip.7zip", "version": "25.01", "vendor": "Igor Pavlov",
        "title": "7-Zip 25.01", "package_name": "7-Zip"}, "installer": {
        "type": "msi", "arch": "x64", "upgrade_code": "{23170f69-40c1-2702-0000-000004000000}",
        "display_names": ["7-Zip 25.01 (x64 edition)"]}}, platform), None)
    sevenzip = [(p["name"], p["version"]) for p in platform.collect_inventory()["programs"]
                if p["name"].startswith("7-Zip")]
    assert sevenzip == [("7-Zip 25.01 (x64 edition)", "25.01"), ("7-Zip 19.00 (x64)", "19.00")]

    # Nothing of this package installed yet: a new entry, named as the installer names it.
    platform.install(_as_sent(_firefox_job("156.0.1", "arm64", display_names=[
        "Mozilla Maintenance Service", "Mozilla Firefox (arm64 en-US)"]), platform), None)
    added = platform.collect_inventory()["programs"][-1]
    assert (added["name"], added["version"], added["arch"]) == (
        "Mozilla Firefox (arm64 en-US)", "156.0.1", "arm64")


def test_the_job_names_the_program_an_upgrade_replaces(api: Api, world: World,
                                                       tmp_path: Path) -> None:
    """The server, which has the scan's matching rules, names the installed entry in the job;
    the simulated agent replaces exactly that entry (it imports none of the scan's code)."""
    agent = _sevenzip_host(api, tmp_path, "WS-UPGRADE", {})
    endpoint = _endpoint_id(api, "WS-UPGRADE")
    _offer(api, endpoint, world.patches["7zip"], "7-Zip 24.08 (x64) < 25.01")
    try:
        [job] = agent.client.request("GET", "/api/v1/agent/jobs")
        outcome = agent.runner.run_once()
    finally:
        agent.client.close()
    assert job["program"]["replaces"] == {
        "name": "7-Zip 24.08 (x64)", "version": "24.08", "arch": "x64", "product_code": None,
        "upgrade_code": None}
    assert outcome == {"jobs": 1, "results_sent": 1}
    sevenzip = [(p["name"], p["version"]) for p in agent.doc["programs"]]
    assert len(sevenzip) == 1 and sevenzip[0][1] == "25.01", sevenzip


# --- migration 0003 keeps what was stored --------------------------------------------------

_ROWS = [
    "INSERT INTO endpoints (id, hostname, revoked, hotpatch, pending_reboot, roaming, scan_state)"
    " VALUES (1, 'WS-1', 0, 0, 0, 0, 'Missing Patches')",
    "INSERT INTO patches (id, source, ukey, title, vendor, category, severity, restart_required,"
    " eula_required, updated_at) VALUES (1, 'winget', 'Contoso.Tool@2.0.0', 'Contoso Tool 2.0.0',"
    " 'Contoso', 'Applications', '', '', 0, '2026-12-01 10:00:00')",
    "INSERT INTO patch_installers (id, patch_id, url, sha256, type, arch) VALUES"
    " (1, 1, 'https://x.invalid/t.exe', 'aa', 'nullsoft', 'x86')",
    "INSERT INTO install_jobs (id, created_by, created_at, `trigger`, allow_restart, status,"
    " max_attempts, item_timeout_s) VALUES (1, 'alice', '2026-12-01 10:00:00', 'manual', 0,"
    " 'done', 2, 3600)",
    "INSERT INTO install_job_items (id, job_id, endpoint_id, patch_id, state, attempts, exit_code,"
    " updated_at) VALUES (1, 1, 1, 1, 'failed', 1, 1603, '2026-12-01 10:05:00')",
    "INSERT INTO install_item_events (item_id, state, at, exit_code) VALUES"
    " (1, 'pending', '2026-12-01 10:00:00', NULL), (1, 'failed', '2026-12-01 10:05:00', 1603)",
]


def test_migration_0003_keeps_items_and_their_trail(bare_url: str) -> None:
    from models.db import get_engine

    migrate(bare_url, "0002_replication_upstream")
    engine = get_engine(bare_url)
    quote = "`" if engine.dialect.name == "mysql" else '"'
    with engine.begin() as conn:
        for statement in _ROWS:
            conn.execute(sa.text(statement.replace("`", quote)))
    migrate(bare_url, "0003_install_results")
    with engine.begin() as conn:
        assert conn.execute(sa.text(
            "SELECT exit_code, installer_id FROM install_job_items")).all() == [(1603, None)]
        assert conn.execute(sa.text("SELECT COUNT(*) FROM install_item_events")).scalar() == 2
        conn.execute(sa.text("UPDATE install_job_items SET exit_code = :c, installer_id = 1"),
                     {"c": CRASH})
        conn.execute(sa.text("INSERT INTO install_item_events (item_id, state, at, exit_code) "
                             "VALUES (1, 'failed', '2026-12-01 10:06:00', :c)"), {"c": CRASH})
    with engine.begin() as conn:
        assert conn.execute(sa.text(
            "SELECT exit_code, installer_id FROM install_job_items")).all() == [(CRASH, 1)]
        # The catalog row replaced by a sync: the item stays, without its installer id.
        conn.execute(sa.text("DELETE FROM patch_installers"))
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT installer_id FROM install_job_items")).all() == [
            (None,)]
        assert conn.execute(sa.text(
            "SELECT MAX(exit_code), COUNT(*) FROM install_item_events")).one() == (CRASH, 3)
