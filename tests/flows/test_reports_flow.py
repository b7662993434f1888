"""`patchflow report` end to end: the Prefect flow, its files, artifacts and report_runs rows,
on SQLite and MariaDB (one Prefect test server for the session)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from models.db import session_scope
from patchflow.scanning.missing_query import MissingFilters, load_missing
from tests.reports.test_reports_output import check_links
from tests.support.report_seed import seed_home, sql_rows


def _artifacts(flow_run_id: str) -> dict[str, object]:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: a for a in found}


def test_report_flow_from_the_cli(cli, home: Path, db_url: str, prefect, tmp_path: Path) -> None:
    seed_home()
    out = tmp_path / "out"
    r = cli("report", "--kind", "all", "--severity", "Critical,Moderate", "--group", "HQ",
            "--subgroups", "--out", str(out), "--page-rows", "50", "--json")
    assert r.code == 0, r.err
    result = json.loads(r.out)
    assert Path(result["path"]) == out.resolve()
    assert result["kinds"] == ["missing", "installed", "patches", "compliance"]

    # CSV rows equal the shared query's rows for the same filters.
    filters = MissingFilters(severity=("Critical", "Moderate"), group="HQ", subgroups=True)
    with session_scope() as session:
        expected = load_missing(session, filters)
    with (out / "missing.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(expected) > 0
    assert {(int(r["endpoint_id"]), int(r["patch_id"])) for r in rows} == set(
        zip(expected["endpoint_id"], expected["patch_id"], strict=True))
    assert {f["name"]: f["rows"] for f in result["files"]}["missing.csv"] == len(expected)
    counts = check_links(out)
    assert counts["fragment"] > 0

    # One report_runs row, with what was asked.
    runs = sql_rows(db_url, "SELECT kind, path, status, filters, created_by FROM report_runs")
    assert len(runs) == 1
    kind, path, status, stored, _who = runs[0]
    assert (kind, path, status) == ("all", str(out.resolve()), "done")
    assert json.loads(stored)["severity"] == ["Critical", "Moderate"]

    artifacts = _artifacts(result["flow_run_id"])
    assert set(artifacts) == {"report-missing", "report-installed", "report-patches",
                              "report-compliance", "report-summary"}
    table = json.loads(artifacts["report-missing"].data)
    assert [row["severity"] for row in table] == ["Critical", "Important", "Moderate", "Low",
                                                  "Unspecified"]
    assert sum(row["pairs"] for row in table) == len(expected)
    summary = artifacts["report-summary"].data
    assert (out / "missing.csv").resolve().as_uri() in summary
    assert "file://" in summary and "missing.html" in summary


def test_default_folder_and_since_last_report(cli, sqlite_home: Path, prefect) -> None:
    """Output under PATCHFLOW_HOME/reports/<timestamp>/; the second installed report shows only
    scan findings since the first one (the seed's inventory dates are all in the past)."""
    seed_home()
    first = json.loads(cli("report", "--kind", "installed", "--format", "csv", "--json").out)
    second = json.loads(cli("report", "--kind", "installed", "--format", "csv", "--json").out)
    for result in (first, second):
        path = Path(result["path"])
        assert path.parent == sqlite_home / "reports"
        assert (path / "installed.csv").exists() and not (path / "index.html").exists()
    assert first["path"] != second["path"]
    scans = []
    for result in (first, second):
        with (Path(result["path"]) / "installed.csv").open(encoding="utf-8") as handle:
            scans.append(sum(1 for row in csv.DictReader(handle) if row["source"] == "scan"))
    assert scans[0] > 0 and scans[1] == 0
    kinds = [r[0] for r in sql_rows(f"sqlite:///{sqlite_home / 'patchflow.db'}",
                                    "SELECT kind FROM report_runs ORDER BY id")]
    assert kinds == ["installed", "installed"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--severity", "Severe"], "unknown severity 'Severe'"),
        (["--category", "Hotfix"], "unknown category 'Hotfix'"),
        (["--restart", "maybe"], "unknown restart value 'maybe'"),
        (["--eula", "yes"], "unknown EULA status 'yes'"),
        (["--since", "2024-02-30"], "invalid --since '2024-02-30'"),
        (["--until", "yesterday"], "invalid --until 'yesterday'"),
        (["--kind", "weekly"], "unknown report kind 'weekly'"),
        (["--format", "pdf"], "unknown format 'pdf'"),
        (["--group", "Nowhere"], "no group named 'Nowhere'"),
        (["--email", "not-an-address"], "invalid e-mail address 'not-an-address'"),
        (["--email", "a@example.org"], "SMTP is not configured"),
        (["--subgroups"], "--subgroups needs --group"),
    ],
)
def test_bad_input_is_one_line_exit_2(cli, home: Path, args: list[str], message: str) -> None:
    """Checked before Prefect starts: no `prefect` fixture needed, nothing written."""
    r = cli("report", *args)
    assert r.code == 2, (r.out, r.err)
    assert message in r.err
    assert len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err
    assert not (home / "reports").exists()


def test_unwritable_out_is_one_line_exit_2(cli, sqlite_home: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for out in (blocker, blocker / "sub"):
        r = cli("report", "--out", str(out))
        assert r.code == 2, r.err
        assert r.err.startswith("error: cannot write reports to") and len(
            r.err.strip().splitlines()) == 1
