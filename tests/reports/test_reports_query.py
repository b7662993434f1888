"""The shared missing-patch query on SQLite and MariaDB: rows and filters against direct SQL."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from patchflow.errors import NotFoundError, UserError
from patchflow.scanning.missing_query import MissingFilters, load_missing
from reports.frames import MISSING_COLUMNS
from tests.support.report_seed import seed_home, sql_rows, sql_scalar

PAIRS_SQL = """
SELECT mp.endpoint_id, mp.patch_id FROM missing_patches mp
JOIN endpoints e ON e.id = mp.endpoint_id
JOIN patches p ON p.id = mp.patch_id
LEFT JOIN eula_acceptances ea ON ea.patch_id = p.id
LEFT JOIN groups g ON g.id = e.group_id
WHERE {where}
"""


def _load(filters: MissingFilters | None = None) -> pd.DataFrame:
    from models.db import session_scope

    with session_scope() as session:
        return load_missing(session, filters)


def _none(value: object) -> object:
    """Missing values read back as NaN or None from pandas; SQL says NULL."""
    return None if pd.isna(value) else value


def _pairs(frame: pd.DataFrame) -> set[tuple[int, int]]:
    return set(zip(frame["endpoint_id"].astype(int), frame["patch_id"].astype(int), strict=True))


def test_rows_columns_and_values_match_sql(home: Path, db_url: str) -> None:
    seeded = seed_home()
    frame = _load()
    assert list(frame.columns) == list(MISSING_COLUMNS)
    assert len(frame) == sql_scalar(db_url, "SELECT COUNT(*) FROM missing_patches")
    assert len(frame) == seeded.missing_pairs
    expected = {
        (eid, pid): (host, group, kb, title, severity, status, reason, released, detected)
        for eid, pid, host, group, kb, title, severity, status, reason, released, detected
        in sql_rows(db_url, """
            SELECT mp.endpoint_id, mp.patch_id, e.hostname, g.name, p.kb, p.title, p.severity,
                   CASE WHEN p.eula_required = 0 OR ea.patch_id IS NOT NULL
                        THEN 'Accepted' ELSE 'Not Accepted' END,
                   mp.reason, p.release_date, mp.detected_at
            FROM missing_patches mp JOIN endpoints e ON e.id = mp.endpoint_id
            JOIN patches p ON p.id = mp.patch_id
            LEFT JOIN groups g ON g.id = e.group_id
            LEFT JOIN eula_acceptances ea ON ea.patch_id = p.id""")
    }
    assert _pairs(frame) == set(expected)
    for row in frame.itertuples(index=False):
        host, group, kb, title, severity, status, reason, released, detected = expected[
            (row.endpoint_id, row.patch_id)]
        assert row.endpoint == host and row.title == title and row.severity == severity
        assert _none(row.group) == group and _none(row.kb) == kb
        assert row.eula_status == status and row.reason == reason
        if isinstance(released, str):  # SQLite returns dates as text
            released = dt.date.fromisoformat(released)
        assert _none(row.release_date) == (released.isoformat() if released else None)
        if isinstance(detected, str):
            detected = dt.datetime.fromisoformat(detected)
        assert row.detected_at == pd.Timestamp(detected, tz="UTC")  # to the microsecond
    # Stable order: endpoint name, then severity (Critical first).
    assert frame["endpoint"].tolist() == sorted(frame["endpoint"].tolist())
    assert frame.equals(_load())


@pytest.mark.parametrize(
    ("filters", "where"),
    [
        (MissingFilters(severity=("critical", "Important")),
         "p.severity IN ('Critical', 'Important')"),
        (MissingFilters(category=("Applications",)), "p.category = 'Applications'"),
        (MissingFilters(restart=("Required", "may require")),
         "p.restart_required IN ('Required', 'May Require')"),
        (MissingFilters(eula="accepted"), "(p.eula_required = 0 OR ea.patch_id IS NOT NULL)"),
        (MissingFilters(eula="not-accepted"), "(p.eula_required = 1 AND ea.patch_id IS NULL)"),
        (MissingFilters(group="HQ"), "g.name = 'HQ'"),
        (MissingFilters(group="HQ", subgroups=True), "g.name IN ('HQ', 'Finance', 'Payroll')"),
        (MissingFilters(group="Finance", subgroups=True), "g.name IN ('Finance', 'Payroll')"),
        (MissingFilters(endpoint="pc-ÄÖ-<0>&"), "e.hostname = 'pc-ÄÖ-<0>&'"),
        (MissingFilters(since="2024-03-01"), "mp.detected_at >= '2024-03-01'"),
        (MissingFilters(since="2024-02-01", until="2024-02-29"),
         "mp.detected_at >= '2024-02-01' AND mp.detected_at < '2024-03-01'"),
        (MissingFilters(severity=("Moderate",), category=("Applications",), eula="not-accepted",
                        group="HQ", subgroups=True),
         "p.severity = 'Moderate' AND p.category = 'Applications' AND p.eula_required = 1 "
         "AND ea.patch_id IS NULL AND g.name IN ('HQ', 'Finance', 'Payroll')"),
    ],
    ids=["severity", "category", "restart", "eula-yes", "eula-no", "group", "subgroups",
         "subgroups-nested", "endpoint", "since", "range", "combined"],
)
def test_filters_match_sql(home: Path, db_url: str, filters: MissingFilters, where: str) -> None:
    seed_home()
    frame = _load(filters)
    expected = set(sql_rows(db_url, PAIRS_SQL.format(where=where)))
    assert expected, "the seed must exercise this filter"
    assert _pairs(frame) == expected


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        (MissingFilters(severity=("Severe",)), "unknown severity 'Severe': use one of Critical"),
        (MissingFilters(category=("Hotfixes",)), "unknown category 'Hotfixes'"),
        (MissingFilters(restart=("Maybe",)), "unknown restart value 'Maybe'"),
        (MissingFilters(eula="yes"), "unknown EULA status 'yes'"),
        (MissingFilters(since="2024-13-01"), "invalid --since '2024-13-01': use YYYY-MM-DD"),
        (MissingFilters(since="2024-03-02", until="2024-03-01"), "is after --until"),
        (MissingFilters(subgroups=True), "--subgroups needs --group"),
    ],
)
def test_bad_filters_are_one_line_user_errors(filters: MissingFilters, message: str) -> None:
    with pytest.raises(UserError) as info:
        filters.normalized()
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_group_is_not_found(sqlite_home: Path) -> None:
    seed_home()
    with pytest.raises(NotFoundError, match="no group named 'Nowhere'"):
        _load(MissingFilters(group="Nowhere"))


def test_filters_round_trip_through_json() -> None:
    filters = MissingFilters(group="HQ", subgroups=True, severity=("critical",), eula="Accepted",
                             since="2024-01-01", until=dt.date(2024, 2, 1)).normalized()
    again = MissingFilters.from_json(filters.to_json())
    assert again == filters
    assert again.severity == ("Critical",) and again.eula == "accepted"
    assert "group HQ and subgroups" in filters.describe()


def test_empty_database_gives_empty_frame_with_columns(sqlite_home: Path) -> None:
    frame = _load(MissingFilters(severity=("Low",)))
    assert frame.empty and list(frame.columns) == list(MISSING_COLUMNS)
