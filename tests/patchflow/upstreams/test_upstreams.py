"""The upstream registry and the connectors' pure parts: which connectors sync which server,
the `--upstream` choices every consumer reads, each kind's `plan`, and the MSRC mirror listing
the sync shares with sources/msrc.py. The sync paths themselves are tested end to end in
tests/flows/test_sync*.py and tests/*/test_replication*.py."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from models import PatchServer
from patchflow import upstreams
from patchflow.errors import UserError
from patchflow.upstreams import msrc, wsus
from sources import msrc as msrc_source
from sources import wsus_soap as soap
from sources.records import SourceError
from tests.support.paths import FIXTURES, REPO

MIRROR = REPO / "patchflow" / "sample_catalog" / "msrc"


def _server(upstream: str, msrc_source: str | None = None) -> PatchServer:
    return PatchServer(name="s", host="h", upstream=upstream, msrc_source=msrc_source)


@pytest.mark.parametrize(("upstream", "source", "kinds"), [
    ("microsoft", str(MIRROR), ["msrc", "winget"]),
    ("microsoft", "https://api.msrc.microsoft.com/cvrf/v3.0/", ["msrc", "winget"]),
    ("microsoft", str(FIXTURES / "wsusscn2"), ["wsusscn2", "winget"]),
    ("wsus", None, ["wsus", "winget"]),
    ("server:hq", None, ["replica"]),
    ("https://hq.example:6201", None, ["replica"]),
    ("ftp://nowhere", None, []),
])
def test_the_registry_says_which_connectors_sync_a_server(upstream: str, source: str | None,
                                                          kinds: list[str]) -> None:
    assert upstreams.kinds_for(_server(upstream, source)) == kinds


def test_every_consumer_reads_the_same_choices() -> None:
    assert [(c.key, c.label) for c in upstreams.choices()] == [
        ("microsoft", "Microsoft"), ("wsus", "WSUS server"),
        ("server", "Another patch server here"), ("remote", "Another patchflow server")]
    assert [c.key for c in upstreams.choices(wizard=True)] == ["microsoft", "wsus"]
    assert upstreams.choice_of("server:hq").key == "server"  # type: ignore[union-attr]
    assert upstreams.choice_of("https://hq:6201").key == "remote"  # type: ignore[union-attr]
    assert upstreams.choice_of("gopher://x") is None
    with pytest.raises(UserError) as refused:
        upstreams.validate("gopher://x", None, "s")  # type: ignore[arg-type]
    assert str(refused.value) == ("invalid upstream 'gopher://x': use microsoft, wsus, "
                                  "server:NAME or https://host:port")


def test_a_connector_refuses_what_its_upstream_lacks() -> None:
    server = _server("wsus")
    with pytest.raises(UserError, match="--upstream wsus needs --wsus-url"):
        upstreams.check(server)
    server.wsus_url = "https://wsus.example:8531"
    upstreams.check(server)
    assert upstreams.syncs_from(_server("server:hq"), "hq")
    assert not upstreams.syncs_from(_server("server:hq2"), "hq")
    assert not upstreams.syncs_from(_server("microsoft"), "hq")
    assert upstreams.content_host(server) == "https://wsus.example:8531"
    assert upstreams.content_host(_server("microsoft")) is None
    assert upstreams.content_upstream(_server("server:hq")) is None  # same content store
    assert upstreams.content_upstream(_server("https://hq.example:6201")) is None  # no token


def test_help_texts_and_the_console_form_follow_the_registry() -> None:
    assert upstreams.forms(hints=True) == ("microsoft | wsus | server:NAME | https://host:port "
                                           "(another patchflow instance)")
    assert upstreams.forms(wizard=True) == "microsoft | wsus"
    server, remote = upstreams.choice_of("server:hq"), upstreams.choice_of("https://hq:6201")
    assert server is not None and server.param is not None
    assert (server.param.field, server.with_param("hq")) == ("upstream_server_name", "server:hq")
    assert server.param_of("server:hq") == "hq"
    assert remote is not None and remote.param is not None
    assert (remote.param.field, remote.with_param("https://hq:6201")) == (
        "upstream_url", "https://hq:6201")
    assert remote.param_of("https://hq:6201") == "https://hq:6201"
    assert "upstream_token" in remote.settings


def test_the_cli_takes_a_replication_token_from_the_environment_for_https_only(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from cli.servers import _options

    monkeypatch.setenv("PATCHFLOW_UPSTREAM_TOKEN", "pfr_env")
    unset = (None,) * 6  # --wsus-url ... --proxy-user

    def token(upstream: str | None, flag: str | None = None) -> str | None:
        return _options(None, None, upstream, *unset, upstream_token=flag).upstream_token

    assert token("https://hq:6201") == "pfr_env"
    assert token("https://hq:6201", "pfr_flag") == "pfr_flag"
    assert token("wsus") is None
    assert token(None) is None
    assert token("wsus", "") is None  # an empty flag is no flag


def test_a_replica_starts_over_when_its_upstream_changes() -> None:
    from patchflow.catalog.servers import ServerOptions

    server = _server("https://hq.example:6201")
    server.upstream_token_enc, server.upstream_fingerprint = "stored", "AB:CD"
    server.replication_revision = 7
    upstreams.apply(server, ServerOptions(host="h2"), None)  # type: ignore[arg-type]
    assert server.replication_revision == 7
    upstreams.apply(server, ServerOptions(upstream="https://other.example:6201"),
                    None)  # type: ignore[arg-type]
    assert server.replication_revision == 0
    server.replication_revision = 3
    upstreams.reset(server)  # the filters changed
    assert server.replication_revision == 0


def test_msrc_plan_skips_months_whose_release_date_is_unchanged() -> None:
    base = "https://msrc.example/cvrf/v3.0/"
    entries = [
        {"ID": "2024-Feb", "CurrentReleaseDate": dt.date(2024, 2, 13), "CvrfUrl": None},
        {"ID": "2024-Jan", "CurrentReleaseDate": dt.date(2024, 3, 1),
         "CvrfUrl": "https://elsewhere.example/2024-Jan"},
        {"ID": "2023-Dec", "CurrentReleaseDate": dt.date(2023, 12, 12), "CvrfUrl": None},
        {"ID": "2017-May-B", "CurrentReleaseDate": None, "CvrfUrl": None},
    ]
    known = {"2023-Dec": dt.date(2023, 12, 12), "2024-Jan": dt.date(2024, 1, 9),
             "2017-May-B": None}
    refs = msrc.plan(entries, known, base)
    assert [(r.key, r.location, r.release_date) for r in refs] == [
        ("2017-May-B", base + "cvrf/2017-May-B", None),  # no date: always looked at
        ("2024-Feb", base + "cvrf/2024-Feb", "2024-02-13"),
        ("2024-Jan", "https://elsewhere.example/2024-Jan", "2024-03-01"),
    ]


def test_wsus_plan_asks_only_for_new_or_changed_revisions() -> None:
    listed = [soap.RevisionId("a", 1), soap.RevisionId("b", 2), soap.RevisionId("c", 3)]
    known = {"a": (1, "KB1"), "b": (1, "KB2")}
    assert wsus.plan(listed, known) == [soap.RevisionId("b", 2), soap.RevisionId("c", 3)]


def test_the_sync_lists_a_mirror_with_the_sources_rule(tmp_path: Path) -> None:
    for name in ("2024-Feb.xml.gz", "2024-Jan.json", "updates.json", "2024-Mar.txt",
                 "9-notes.json"):
        (tmp_path / name).write_bytes(b"{}")
    (tmp_path / "2024-Apr.json").mkdir()
    assert [key for key, _file in msrc_source.list_directory(tmp_path)] == [
        "2024-Feb", "2024-Jan"]
    assert [key for key, _raw in msrc_source.iter_directory(tmp_path)] == [
        "2024-Feb", "2024-Jan"]
    with pytest.raises(SourceError, match="not a directory"):
        msrc_source.list_directory(tmp_path / "missing")


def test_feed_connectors_are_registered_with_their_official_sources() -> None:
    from patchflow.catalog import vulnfeeds

    assert vulnfeeds.feed_names() == ("kev", "mozilla", "nvd")
    assert upstreams.FEEDS["kev"].default_source.startswith("https://www.cisa.gov/")
    assert upstreams.FEEDS["mozilla"].default_source.endswith("master.tar.gz")
    assert upstreams.FEEDS["nvd"].default_source.startswith("https://services.nvd.nist.gov/")
    with pytest.raises(UserError, match="choose from kev, mozilla, nvd"):
        vulnfeeds.feed_name("osv")


def test_nvd_asks_for_changes_only_within_its_120_day_window() -> None:
    from patchflow.upstreams import nvd as nvd_feed

    now = dt.datetime(2026, 12, 4, 12, 0)
    assert nvd_feed.window(None, now) == ()
    assert nvd_feed.window(now - dt.timedelta(days=3), now) == (now - dt.timedelta(days=3), now)
    assert nvd_feed.window(now - dt.timedelta(days=121), now) == ()


def test_nvd_rate_limit_wait_follows_retry_after_then_grows(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import requests

    from patchflow.upstreams import nvd as nvd_feed

    monkeypatch.delenv("PATCHFLOW_NVD_DELAY", raising=False)
    answer = requests.Response()
    answer.status_code = 403
    assert nvd_feed.rate_limit_wait(answer, None, 0) == 30.0
    assert nvd_feed.rate_limit_wait(answer, None, 2) == 90.0
    answer.headers["Retry-After"] = "12"
    assert nvd_feed.rate_limit_wait(answer, None, 2) == 12.0
    answer.headers["Retry-After"] = "99999"
    assert nvd_feed.rate_limit_wait(answer, None, 0) == 300.0
    monkeypatch.setenv("PATCHFLOW_NVD_DELAY", "0.5")
    assert nvd_feed.rate_limit_wait(answer, None, 0) == 0.5


def test_mozilla_plan_lists_advisories_and_refuses_a_broken_archive(tmp_path: Path) -> None:
    from patchflow.upstreams import mozilla as mozilla_feed
    from tests.conftest import shared_fixtures

    folder = shared_fixtures("vuln") / "mozilla"
    plan = mozilla_feed.CONNECTOR.plan(str(folder), None, str(tmp_path))
    assert plan.error is None and len(plan.refs) == 168
    names = [Path(r["location"]).name for r in plan.refs]
    assert names == sorted(names) and all(n.startswith("mfsa") for n in names)
    broken = tmp_path / "advisories.tar.gz"
    broken.write_bytes(b"\x1f\x8b not really gzip")
    plan = mozilla_feed.CONNECTOR.plan(str(broken), None, str(tmp_path))
    assert plan.refs == [] and plan.error is not None
    assert plan.error.startswith("advisories.tar.gz: not a readable advisories archive")
    assert "\n" not in plan.error
