"""A replica facing an upstream that misbehaves: garbage, a page cut off, a page that is not
what it claims, a token revoked between two pages. Each ends the sync Failed with its reason,
keeps every page before it, applies nothing of the bad one, and the next sync resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.test_replication import _catalog, _revision, _status
from tests.support.replication_harness import FakeUpstream, make_records, page_body

pytestmark = pytest.mark.usefixtures("prefect")


def test_bad_answers_fail_the_sync_and_apply_nothing_of_the_bad_page(
    cli, sqlite_home: Path, tmp_path: Path
) -> None:
    from patchflow.ops import tls

    cert, key = tmp_path / "fake.crt", tmp_path / "fake.key"
    tls.generate_self_signed("localhost", cert, key)
    (sqlite_home / "patchflow.toml").write_text("[replication]\npage_size = 10\n")
    records = make_records(25)
    fake = FakeUpstream(cert, key)
    good = {0: page_body(records[:10], 0, 25), 10: page_body(records[10:20], 10, 25),
            20: page_body(records[20:], 20, 25)}
    wrong_vocabulary = json.loads(good[10][1])
    wrong_vocabulary["patches"][3]["severity"] = "Huge"
    backwards = json.loads(good[10][1])
    backwards["patches"][0]["revision"] = 15
    cases = [
        ((200, b"<html><body>Proxy login</body></html>"),
         "not JSON (is the URL a patchflow server?)"),
        ("cut", "the answer was cut off"),
        ((200, good[10][1][:700]), "truncated or malformed JSON"),
        ((200, json.dumps(wrong_vocabulary).encode()),
         "unexpected content at patches.3.severity"),
        ((200, json.dumps(backwards).encode()), "revisions out of order"),
        ((403, b'{"error": "replication token revoked"}'),
         "refused the replication token (HTTP 403: replication token revoked)"),
    ]
    db_url = f"sqlite:///{sqlite_home / 'patchflow.db'}"
    with fake.running():
        fake.pages[0] = good[0]
        assert cli("init").code == 0
        result = cli("server", "add", "branch", "--host", "b", "--upstream", fake.url,
                     "--upstream-token", "pfr_x", "--upstream-fingerprint", tls.fingerprint(cert))
        assert result.code == 0, result.err
        for answer, reason in cases:
            if answer == "cut":
                fake.pages[10], fake.cut[10] = good[10], 500
            else:
                fake.pages[10] = answer
                fake.cut.pop(10, None)
            result = cli("sync", "branch")
            assert result.code == 1, reason
            assert "Traceback" not in result.out + result.err
            status = _status(cli, "branch")
            assert status["sync_status"] == "Failed"
            assert reason in status["sync_message"], status["sync_message"]
            assert _revision(db_url, "branch") == 10
            assert len(_catalog(db_url, "branch")) == 10
        fake.pages.update(good)
        fake.cut.clear()
        assert cli("sync", "branch").code == 0
        assert "2 pages applied (15 patches), at revision 25 of 25" in _status(
            cli, "branch")["sync_message"]
    assert len(_catalog(db_url, "branch")) == 25
    assert [p for p in fake.requests if "since=0&" in p + "&"] == [fake.requests[0]]
