"""The one query behind every "missing patches" view: reports, `patchflow missing`, the console.

Every view that lists missing patches goes through `load_missing`, so a report's CSV, the CLI's
JSON and the dashboard agree to the row. Filters are checked against the product vocabulary here,
once, so each entry point gets the same one-line error for a misspelt severity.

Speed: the SQL returns only the narrow `missing_patches` columns (joined only to filter); endpoint
and patch attributes are fetched once per endpoint / patch and merged in pandas. On 400,000 pairs
that halves the load time and memory compared with one wide join, because each title string is
shared by all its rows instead of being decoded once per row.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    and_,
    case,
    false,
    or_,
    select,
    type_coerce,
)
from sqlalchemy.orm import Session

from models import Endpoint, EulaAcceptance, Group, MissingPatch, Patch, PatchDecline
from models.bulk import chunks, fetch_rows
from models.enums import Category, EulaStatus, RestartRequired, Severity
from patchflow.errors import UserError
from patchflow.fleet.groups import group_ids
from reports.frames import MISSING_COLUMNS, SEVERITIES, empty, severity_rank

EULA_CHOICES = {
    "accepted": EulaStatus.ACCEPTED.value,
    "not-accepted": EulaStatus.NOT_ACCEPTED.value,
}


@dataclass(frozen=True)
class MissingFilters:
    """The filters of the install view plus a date range; None / empty means "all".

    Values are matched case-insensitively and stored in the product's spelling by `normalized()`.
    The date range is inclusive and in UTC; it applies to each report's event date (when a missing
    patch was detected, when a patch was installed).
    """

    endpoint: str | None = None
    group: str | None = None
    subgroups: bool = False
    severity: tuple[str, ...] = ()
    category: tuple[str, ...] = ()
    restart: tuple[str, ...] = ()
    eula: str | None = None  # "accepted" | "not-accepted"
    since: dt.date | None = None
    until: dt.date | None = None
    # Only pairs with a CVE exploited in the wild. A property of the rated pair, so only
    # patchflow.catalog.vuln_query.load_rated_missing applies it (load_missing refuses it).
    exploited: bool = False
    # Resolved by `resolve()`: the group ids (with subgroups) the group filter stands for.
    group_ids: tuple[int, ...] | None = field(default=None, compare=False)

    def normalized(self) -> MissingFilters:
        """Check every value against the vocabularies; raise one-line UserErrors."""
        since = parse_date(self.since, "--since")
        until = parse_date(self.until, "--until")
        if since and until and since > until:
            raise UserError(f"--since {since} is after --until {until}")
        eula = None
        if self.eula is not None and self.eula != "":
            eula = self.eula.strip().lower().replace(" ", "-").replace("_", "-")
            if eula not in EULA_CHOICES:
                raise UserError(f"unknown EULA status {self.eula!r}: use accepted or not-accepted")
        if self.subgroups and not self.group:
            raise UserError("--subgroups needs --group")
        return replace(
            self,
            endpoint=(self.endpoint or "").strip() or None,
            group=(self.group or "").strip() or None,
            severity=_vocab(self.severity, [s.value for s in Severity], "severity"),
            category=_vocab(self.category, [c.value for c in Category], "category"),
            restart=_vocab(self.restart, [r.value for r in RestartRequired], "restart value"),
            eula=eula,
            since=since,
            until=until,
        )

    def resolve(self, session: Session) -> MissingFilters:
        """Normalize, then look the group up (a missing group is a one-line NotFoundError)."""
        filters = self.normalized()
        if filters.group is None:
            return filters
        ids = tuple(group_ids(session, filters.group, filters.subgroups))
        return replace(filters, group_ids=ids)

    def to_json(self) -> dict[str, Any]:
        """JSON-safe form for report_runs.filters and task arguments (drops resolved ids)."""
        data = asdict(self)
        data.pop("group_ids")
        for key in ("since", "until"):
            data[key] = data[key].isoformat() if data[key] else None
        for key in ("severity", "category", "restart"):
            data[key] = list(data[key])
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MissingFilters:
        values = dict(data)
        for key in ("severity", "category", "restart"):
            values[key] = tuple(values.get(key) or ())
        values.pop("group_ids", None)
        return cls(**values).normalized()

    def describe(self) -> str:
        """One line for report headers: what a reader needs to know about the selection."""
        parts: list[str] = []
        if self.endpoint:
            parts.append(f"endpoint {self.endpoint}")
        if self.group:
            parts.append(f"group {self.group}" + (" and subgroups" if self.subgroups else ""))
        for name, values in (("severity", self.severity), ("category", self.category),
                             ("restart", self.restart)):
            if values:
                parts.append(f"{name} {', '.join(values)}")
        if self.eula:
            parts.append(f"EULA {EULA_CHOICES[self.eula]}")
        if self.exploited:
            parts.append("exploited in the wild")
        if self.since or self.until:
            parts.append(f"from {self.since or 'the start'} to {self.until or 'now'}")
        return "; ".join(parts) if parts else "all endpoints and patches"


def parse_date(value: str | dt.date | None, what: str = "date") -> dt.date | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value).strip())
    except ValueError:
        raise UserError(f"invalid {what} {value!r}: use YYYY-MM-DD") from None


def _vocab(values: Iterable[str] | str | None, allowed: list[str], what: str) -> tuple[str, ...]:
    if values is None:
        return ()
    if isinstance(values, str):
        values = values.split(",")
    lookup = {a.lower(): a for a in allowed}
    out: list[str] = []
    for raw in values:
        key = raw.strip().lower()
        if not key:
            continue
        if key not in lookup:
            raise UserError(f"unknown {what} {raw.strip()!r}: use one of {', '.join(allowed)}")
        if lookup[key] not in out:
            out.append(lookup[key])
    return tuple(out)


def day_bounds(filters: MissingFilters) -> tuple[dt.datetime | None, dt.datetime | None]:
    """[since 00:00 UTC, until+1 00:00 UTC): the inclusive date range as half-open instants."""
    start = end = None
    if filters.since:
        start = dt.datetime.combine(filters.since, dt.time(), tzinfo=dt.UTC)
    if filters.until:
        end = dt.datetime.combine(filters.until + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    return start, end


def eula_status_expr() -> ColumnElement[str]:
    """SQL for the EULA status: a patch without a EULA counts as Accepted."""
    accepted = or_(Patch.eula_required == false(), EulaAcceptance.patch_id.is_not(None))
    return case((accepted, EulaStatus.ACCEPTED.value), else_=EulaStatus.NOT_ACCEPTED.value)


def declined_ids() -> Select[tuple[int]]:
    """Every declined patch id (patchflow.install.approvals), as a subquery."""
    return select(PatchDecline.patch_id)


def not_declined() -> ColumnElement[bool]:
    """The condition on `missing_patches` that every view, count and install job adds: a
    declined patch is missing nowhere, so it is neither listed, counted nor installed."""
    return MissingPatch.patch_id.not_in(declined_ids())


def declined_set(session: Session) -> set[int]:
    return set(session.scalars(declined_ids()))


def apply_scope(
    stmt: Select[Any],
    filters: MissingFilters,
    endpoint_id: Any,
    patch_id: Any,
    joined: tuple[type, ...] = (),
) -> Select[Any]:
    """Add the endpoint and patch filters to `stmt`, joining Endpoint / Patch (on the given id
    columns) only when a filter needs them; `joined` names the entities already joined.

    Shared by every loader so "Critical in group X" selects the same endpoints and patches in
    each report. Skipping unneeded joins matters: on 400,000 pairs the two primary-key joins
    cost a third of the query.
    """
    endpoint_filter = bool(filters.endpoint) or filters.group_ids is not None
    patch_filter = bool(filters.severity or filters.category or filters.restart or filters.eula)
    if filters.group and filters.group_ids is None:
        raise ValueError("filters.resolve(session) must run before the group filter is applied")
    if endpoint_filter and Endpoint not in joined:
        stmt = stmt.join(Endpoint, Endpoint.id == endpoint_id)
    if patch_filter and Patch not in joined:
        stmt = stmt.join(Patch, Patch.id == patch_id)
    conditions = []
    if filters.endpoint:
        conditions.append(Endpoint.hostname == filters.endpoint)
    if filters.group_ids is not None:
        conditions.append(Endpoint.group_id.in_(filters.group_ids))
    if filters.severity:
        conditions.append(Patch.severity.in_(filters.severity))
    if filters.category:
        conditions.append(Patch.category.in_(filters.category))
    if filters.restart:
        conditions.append(Patch.restart_required.in_(filters.restart))
    if filters.eula:
        stmt = stmt.outerjoin(EulaAcceptance, EulaAcceptance.patch_id == Patch.id)
        accepted = or_(Patch.eula_required == false(), EulaAcceptance.patch_id.is_not(None))
        conditions.append(accepted if filters.eula == "accepted" else ~accepted)
    return stmt.where(and_(*conditions)) if conditions else stmt


def load_missing(session: Session, filters: MissingFilters | None = None,
                 include_declined: bool = False) -> pd.DataFrame:
    """One row per missing (endpoint, patch) matching the filters, in MISSING_COLUMNS order.

    Sorted by endpoint name, then severity (Critical first), release date (newest first) and
    patch id, so two calls on the same data return the same rows in the same order.
    Declined patches (patchflow.install.approvals) are left out, here once for every view; with
    `include_declined` they stay, and a `declined` column says which they are.
    """
    filters = (filters or MissingFilters()).resolve(session)
    if filters.exploited:
        raise ValueError("the exploited filter needs the rated pairs: use "
                         "patchflow.catalog.vuln_query.load_rated_missing")
    stmt = select(
        MissingPatch.endpoint_id,
        MissingPatch.patch_id,
        MissingPatch.product,
        MissingPatch.installed_version,
        MissingPatch.available_version,
        MissingPatch.reason,
        raw(MissingPatch.detected_at),
    )
    stmt = apply_scope(stmt, filters, MissingPatch.endpoint_id, MissingPatch.patch_id)
    start, end = day_bounds(filters)
    if start:
        stmt = stmt.where(MissingPatch.detected_at >= start)
    if end:
        stmt = stmt.where(MissingPatch.detected_at < end)
    if not include_declined:
        stmt = stmt.where(not_declined())
    pairs = fetch_frame(session, stmt)
    if pairs.empty:
        frame = empty(MISSING_COLUMNS)
        return frame.assign(declined=pd.Series(dtype="bool")) if include_declined else frame
    pairs["detected_at"] = to_utc(pairs["detected_at"])
    frame = attach_attrs(session, pairs)[list(MISSING_COLUMNS)]
    if include_declined:
        frame = frame.assign(
            declined=frame["patch_id"].astype("int64").isin(declined_set(session)))
    return frame


def attach_attrs(session: Session, rows: pd.DataFrame) -> pd.DataFrame:
    """Add endpoint and patch attributes to (endpoint_id, patch_id) rows and sort them.

    The order (endpoint name; severity, newest release, patch id) is computed on the small
    endpoint and patch frames and carried as two integer ranks, so 400,000 rows are sorted on
    integers instead of strings.
    """
    endpoints = load_endpoint_attrs(session, rows["endpoint_id"].unique().tolist())
    endpoints = endpoints.sort_values(["endpoint", "endpoint_id"], kind="stable")
    endpoints["_e"] = np.arange(len(endpoints))
    patches = load_patch_attrs(session, rows["patch_id"].unique().tolist())
    patches = patches.assign(_s=severity_rank(patches["severity"])).sort_values(
        ["_s", "release_date", "patch_id"], ascending=[True, False, True],
        na_position="last", kind="stable",
    ).drop(columns="_s")
    patches["_p"] = np.arange(len(patches))
    frame = rows.merge(endpoints, on="endpoint_id", how="left", validate="many_to_one")
    frame = frame.merge(patches, on="patch_id", how="left", validate="many_to_one")
    frame = frame.sort_values(["_e", "_p"], kind="stable")
    return frame.drop(columns=["_e", "_p"]).reset_index(drop=True)


def raw(column: Any) -> Any:
    """A datetime column as the driver returns it (SQLite: ISO text, PyMySQL: naive datetime),
    converted by `to_utc` for the whole column at once instead of row by row."""
    return type_coerce(column, String).label(column.key)


def fetch_frame(session: Session, stmt: Any, columns: list[str] | None = None) -> pd.DataFrame:
    """The rows as a frame, read at the driver (`models.bulk.fetch_rows`), its columns named
    `columns` or as the statement names them: dates and datetimes arrive as text on SQLite and
    objects on MariaDB, so callers pass them through `to_utc` / `iso_dates`, which accept both;
    booleans are 0/1."""
    keys, rows = fetch_rows(session, stmt)
    names = columns or keys
    if not rows:
        return pd.DataFrame({k: pd.Series(dtype="object") for k in names})
    return pd.DataFrame.from_records(rows, columns=names)


# Past this many ids, one scan of the table beats chunked IN lists (measured on 50,000 rows).
WHOLE_TABLE_ABOVE = 2000
# A scan's id lists: SQLite allows 32,766 bound parameters, and a scan's batches are large.
SCAN_IN_LIST = 5000


def fetch_endpoints(session: Session, stmt: Any, ids: list[int] | None) -> pd.DataFrame:
    """`stmt` (a SELECT from endpoints whose first column is the id labelled endpoint_id) for
    the given endpoints (None = all): chunked IN lists for a few, one pass over the table
    filtered here for many."""
    if ids is None or len(ids) > WHOLE_TABLE_ABOVE:
        frame = fetch_frame(session, stmt)
        if ids is not None:
            frame = frame[frame["endpoint_id"].isin(ids)].reset_index(drop=True)
        return frame
    return pd.concat(
        [fetch_frame(session, stmt.where(Endpoint.id.in_(chunk)))
         for chunk in chunks(ids, SCAN_IN_LIST)]
        or [fetch_frame(session, stmt.where(false()))],
        ignore_index=True,
    )


def load_endpoint_attrs(session: Session, ids: list[int] | None = None) -> pd.DataFrame:
    """endpoint_id, endpoint, group_id, group, scan_state for the given endpoints (None = all)."""
    base = select(
        Endpoint.id.label("endpoint_id"),
        Endpoint.hostname.label("endpoint"),
        Endpoint.group_id,
        Group.name.label("group"),
        Endpoint.scan_state,
    ).outerjoin(Group, Group.id == Endpoint.group_id).where(
        Endpoint.replaces_endpoint_id.is_(None))  # re-enrolments awaiting approval: not counted
    frame = fetch_endpoints(session, base, ids)
    frame["group_id"] = frame["group_id"].astype("Int64")
    return frame


def load_patch_attrs(session: Session, ids: list[int]) -> pd.DataFrame:
    """Patch attributes with the EULA status, release date as an ISO string (sorts as a date)."""
    base = select(
        Patch.id.label("patch_id"),
        Patch.kb,
        Patch.package_id,
        Patch.title,
        Patch.severity,
        Patch.category,
        Patch.restart_required,
        eula_status_expr().label("eula_status"),
        Patch.release_date,
    ).outerjoin(EulaAcceptance, EulaAcceptance.patch_id == Patch.id)
    frame = pd.concat(
        [fetch_frame(session, base.where(Patch.id.in_(chunk)))
         for chunk in chunks(ids, SCAN_IN_LIST)]
        or [fetch_frame(session, base.where(false()))],
        ignore_index=True,
    )
    frame["release_date"] = iso_dates(frame["release_date"])
    return frame


def iso_dates(values: pd.Series) -> pd.Series:
    """Dates (or the driver's ISO text) → 'YYYY-MM-DD' strings, missing stays missing: exact in
    CSV and JSON, and they sort as dates."""

    def one(value: Any) -> str | None:
        if value is None or (isinstance(value, float) and value != value):
            return None
        return value[:10] if isinstance(value, str) else value.isoformat()[:10]

    return values.map(one).astype("object")


def to_utc(values: pd.Series) -> pd.Series:
    """Aware UTC datetimes from either driver; microseconds kept."""
    return pd.to_datetime(values, utc=True, format="ISO8601").astype("datetime64[us, UTC]")


__all__ = [
    "EULA_CHOICES",
    "SEVERITIES",
    "MissingFilters",
    "apply_scope",
    "attach_attrs",
    "day_bounds",
    "eula_status_expr",
    "load_endpoint_attrs",
    "load_missing",
    "load_patch_attrs",
    "parse_date",
]
